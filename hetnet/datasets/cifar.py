"""CIFAR-10 from its binary distribution, in colour or grey.

The binary version (``cifar-10-binary.tar.gz``, folder ``cifar-10-batches-bin/``) stores
each image as one record of 3,073 bytes: the label (0..9), then the 1,024 red, the 1,024
green and the 1,024 blue bytes of the 32x32 image, each plane in row-major order. Five
training files ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin`` hold
10,000 records each. The Python version of the set is a pickle, which can run code when
loaded; it is never read here.

Where the files are looked for: ``<root>/cifar-10/`` for each root of
:func:`hetnet.datasets.find_dataset`'s search (``$HETNET_DATA``, the repository's
``datasets/``, the installed ``hetnet/_datasets/``, ``/usr/share/datasets/``), first match
wins. A folder may hold the ``.bin`` files themselves, the ``cifar-10-batches-bin/`` folder
the archive unpacks to, or the archive ``cifar-10-binary.tar.gz`` itself (read in place).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._common import DatasetError, DatasetNotFoundError

__all__ = [
    "CIFAR10_CLASSES",
    "find_cifar10",
    "load_cifar10",
    "read_cifar10_bin",
    "rgb_to_grey",
]

#: Class names of CIFAR-10, by label.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

_SIDE = 32
_PIXELS = 3 * _SIDE * _SIDE
_RECORD = 1 + _PIXELS
_PER_FILE = 10000
_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_TEST_FILES = ("test_batch.bin",)
_ARCHIVE = "cifar-10-binary.tar.gz"
_ARCHIVE_DIR = "cifar-10-batches-bin"
_FOLDER = "cifar-10"

#: ITU-R BT.601 luma weights, the conversion PIL's ``convert("L")`` and torchvision's
#: ``Grayscale`` use.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_HOW_TO_GET = (
    "download the binary version, cifar-10-binary.tar.gz, from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and put it (or the cifar-10-batches-bin/ "
    "folder it unpacks to, or the six .bin files) in $HETNET_DATA/cifar-10/ "
    "(or datasets/cifar-10/ in a source checkout); the Python (pickle) version is not read"
)


def rgb_to_grey(images: np.ndarray) -> np.ndarray:
    """Luma of RGB images, ``0.299 R + 0.587 G + 0.114 B``.

    Parameters
    ----------
    images : numpy.ndarray
        Shape ``(n, 3, H, W)``, channels in R, G, B order; any real or integer dtype.

    Returns
    -------
    numpy.ndarray of float32
        Shape ``(n, 1, H, W)``, in the units of the input (0..255 for uint8 input).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (n, 3, H, W), got {images.shape}")
    grey = np.einsum("c,nchw->nhw", _LUMA, images.astype(np.float32, copy=False))
    return grey[:, None]


def _decode_records(raw: bytes, where: str, expect_records: int | None):
    """Labels ``(n,)`` uint8 and images ``(n, 3, 32, 32)`` uint8 from a file's bytes."""
    if len(raw) % _RECORD:
        raise DatasetError(
            f"{where}: {len(raw)} bytes is not a whole number of {_RECORD}-byte CIFAR-10 "
            f"records (1 label byte + {_PIXELS} pixel bytes); is it the binary version "
            "and complete?"
        )
    n = len(raw) // _RECORD
    if expect_records is not None and n != expect_records:
        raise DatasetError(
            f"{where}: holds {n} records ({len(raw)} bytes), a CIFAR-10 batch file holds "
            f"{expect_records} ({expect_records * _RECORD} bytes)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(n, _RECORD)
    labels = records[:, 0].copy()
    if n and labels.max() >= len(CIFAR10_CLASSES):
        raise DatasetError(
            f"{where}: label byte {labels.max()} out of range 0..9; not a CIFAR-10 "
            "binary file (CIFAR-100's records start with two label bytes)"
        )
    images = records[:, 1:].reshape(n, 3, _SIDE, _SIDE).copy()
    return labels, images


def read_cifar10_bin(path: str | os.PathLike, expect_records: int | None = None
                     ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Read one CIFAR-10 binary batch file.

    The size is checked before anything is decoded.

    Parameters
    ----------
    path : str or path-like
        A ``data_batch_*.bin`` or ``test_batch.bin`` file.
    expect_records : int or None, default None
        If given, the number of records the file must hold (10,000 for the real files).

    Returns
    -------
    images : numpy.ndarray of uint8
        Shape ``(n, 3, 32, 32)``, channels R, G, B.
    labels : numpy.ndarray of uint8
        Shape ``(n,)``, values 0..9.

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    DatasetError
        The size is not a whole number of 3,073-byte records, disagrees with
        ``expect_records``, or a label is out of range.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetNotFoundError(f"CIFAR-10 file not found: {path}") from None
    # Checked from the size alone, so a wrong file is not read into memory first.
    if size % _RECORD:
        raise DatasetError(
            f"{path}: {size} bytes is not a whole number of {_RECORD}-byte CIFAR-10 "
            f"records (1 label byte + {_PIXELS} pixel bytes); is it the binary version "
            "and complete?"
        )
    if expect_records is not None and size != expect_records * _RECORD:
        raise DatasetError(
            f"{path}: holds {size // _RECORD} records ({size} bytes), expected "
            f"{expect_records} ({expect_records * _RECORD} bytes)"
        )
    labels, images = _decode_records(path.read_bytes(), str(path), expect_records)
    return images, labels


def _folder_files(directory: Path) -> dict[str, Path] | Path | None:
    """The six .bin files (by name) in ``directory`` or its ``cifar-10-batches-bin/``,
    else the archive's path, else None. Some but not all of the files is an error."""
    names = _TRAIN_FILES + _TEST_FILES
    for folder in (directory, directory / _ARCHIVE_DIR):
        found = {name: folder / name for name in names if (folder / name).is_file()}
        if found:
            missing = [name for name in names if name not in found]
            if missing:
                raise DatasetNotFoundError(
                    f"{folder} holds an incomplete CIFAR-10 set: missing {', '.join(missing)}"
                )
            return found
    archive = directory / _ARCHIVE
    return archive if archive.is_file() else None


def find_cifar10() -> Path:
    """The folder or archive CIFAR-10 will be read from.

    Returns
    -------
    pathlib.Path
        A folder holding the six ``.bin`` files, or the path of ``cifar-10-binary.tar.gz``.

    Raises
    ------
    DatasetNotFoundError
        Nowhere found; the message lists the folders searched and how to get the data.
    """
    from ._common import _search_roots  # at call time, so a changed search path is seen

    searched = []
    for root in _search_roots():
        directory = root / _FOLDER
        searched.append(directory)
        found = _folder_files(directory)
        if isinstance(found, dict):
            return next(iter(found.values())).parent
        if found is not None:
            return found
    raise DatasetNotFoundError(
        "CIFAR-10 not found; searched: " + ", ".join(map(str, searched))
        + f". To get it: {_HOW_TO_GET}."
    )


def _read_split_files(location: Path, names: tuple[str, ...]):
    parts = []
    if location.is_dir():
        for name in names:
            parts.append(read_cifar10_bin(location / name, expect_records=_PER_FILE))
        return parts
    try:
        with tarfile.open(location, "r:gz") as tar:
            for name in names:
                member = f"{_ARCHIVE_DIR}/{name}"
                try:
                    info = tar.getmember(member)
                except KeyError:
                    raise DatasetError(f"{location}: no member {member}") from None
                where = f"{location}:{member}"
                if not info.isfile() or info.size != _PER_FILE * _RECORD:
                    raise DatasetError(
                        f"{where}: {info.size} bytes, expected {_PER_FILE} records of "
                        f"{_RECORD} bytes ({_PER_FILE * _RECORD})"
                    )
                labels, images = _decode_records(tar.extractfile(info).read(), where,
                                                  _PER_FILE)
                parts.append((images, labels))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{location}: unreadable archive ({exc})") from exc
    return parts


def load_cifar10(split: str = "train", grey: bool = True, normalize: bool = True,
                 flatten: bool = False, path: str | os.PathLike | None = None
                 ) -> tuple[NDArray[Any], NDArray[np.int64]]:
    """Load CIFAR-10 (Krizhevsky 2009) from the binary distribution.

    Parameters
    ----------
    split : {"train", "test"}, default "train"
        50,000 training images (``data_batch_1..5.bin``, in that order) or the 10,000 of
        ``test_batch.bin``.
    grey : bool, default True
        Convert to one channel with the luma weights ``0.299 R + 0.587 G + 0.114 B``;
        ``False`` keeps the three RGB channels.
    normalize : bool, default True
        float32 scaled to [0, 1] (value / 255). ``False`` returns uint8: the raw bytes in
        colour, the luma rounded to the nearest integer in grey.
    flatten : bool, default False
        Return rows of ``C * 1024`` values instead of ``(n, C, 32, 32)``.
    path : str, path-like or None, default None
        A folder holding the ``.bin`` files (or ``cifar-10-batches-bin/``) or the archive;
        ``None`` searches as :func:`find_cifar10` does.

    Returns
    -------
    X : numpy.ndarray
        Shape ``(n, 1, 32, 32)`` in grey, ``(n, 3, 32, 32)`` in colour (NCHW), or
        ``(n, C * 1024)`` with ``flatten``; float32 in [0, 1] or uint8.
    y : numpy.ndarray of int64
        Shape ``(n,)``, class indices 0..9 (:data:`CIFAR10_CLASSES`).

    Raises
    ------
    DatasetNotFoundError
        The files are not found; the message says where to put which file.
    DatasetError
        A file's size is not 10,000 records of 3,073 bytes, or a label is out of range.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if path is None:
        location = find_cifar10()
    else:
        location = Path(path)
        found = _folder_files(location) if location.is_dir() else (
            location if location.is_file() else None)
        if found is None:
            raise DatasetNotFoundError(
                f"{location} holds no CIFAR-10 binary files. To get them: {_HOW_TO_GET}."
            )
        location = next(iter(found.values())).parent if isinstance(found, dict) else found
    parts = _read_split_files(location, _TRAIN_FILES if split == "train" else _TEST_FILES)
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if grey:
        X = rgb_to_grey(images)
        X = X / np.float32(255.0) if normalize else np.rint(X).astype(np.uint8)
    else:
        X = images.astype(np.float32) / np.float32(255.0) if normalize else images
    if flatten:
        X = X.reshape(X.shape[0], -1)
    return np.ascontiguousarray(X), labels
