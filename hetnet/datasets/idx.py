"""IDX files (MNIST, Fashion-MNIST) and scikit-learn's digits: reading, writing, finding, loading."""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import _common
from ._common import DatasetError, DatasetNotFoundError

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# IDX files (http://yann.lecun.com/exdb/mnist/ "FILE FORMATS"): two zero bytes, a type
# byte (0x08 = unsigned byte), a byte giving the number of dimensions, then each dimension
# as a big-endian uint32, then the data in C order.
# ---------------------------------------------------------------------------------------

_IDX_MAGIC = MappingProxyType({0x00000801: "labels", 0x00000803: "images"})
_NDIM_MAGIC = MappingProxyType({1: 0x00000801, 3: 0x00000803})
_GZIP_MAGIC = b"\x1f\x8b"


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"IDX file not found: {path}") from None


def _inflate_bounded(raw: bytes, path: Path) -> bytes:
    """Inflate a gzip IDX file no further than its header says it holds:
    the header first (16 bytes at most), then the declared data and one
    byte more, which shows a stream longer than declared (a small file
    must not inflate to gigabytes before it is refused)."""
    d = zlib.decompressobj(wbits=31)
    head = d.decompress(raw, 16)
    while len(head) < 16 and d.unconsumed_tail:
        head += d.decompress(d.unconsumed_tail, 16 - len(head))
    magic = int.from_bytes(head[:4], "big") if len(head) >= 4 else None
    if magic not in _IDX_MAGIC:
        return head                   # the decoder names what is wrong
    header = 4 + 4 * (magic & 0xFF)
    if len(head) < header:
        return head
    dims = [int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(magic & 0xFF)]
    expected = header + math.prod(dims)
    out = [head]
    have = len(head)
    tail = d.unconsumed_tail
    while have <= expected and tail:
        chunk = d.decompress(tail, min(expected + 1 - have, 1 << 24))
        tail = d.unconsumed_tail
        out.append(chunk)
        have += len(chunk)
        if not chunk and not tail:
            break
    if have <= expected and not d.eof:          # input consumed by the loop's last call
        chunk = d.decompress(b"", expected + 1 - have)
        out.append(chunk)
        have += len(chunk)
    if have > expected:
        raise DatasetError(
            f"{path}: trailing bytes: the gzip stream holds more than the {expected} bytes "
            f"its IDX header declares for shape {tuple(dims)}; refusing to inflate it further")
    return b"".join(out)


def _decode_idx(raw: bytes, path: Path, ndim: int | None) -> np.ndarray:
    """Parse the bytes of an IDX file (gzip or raw); see :func:`read_idx`."""
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = _inflate_bounded(raw, path)
        except (EOFError, OSError, zlib.error) as exc:
            raise DatasetError(
                f"{path}: corrupt or truncated gzip stream ({exc}); "
                "replace the file with a fresh copy"
            ) from exc
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _IDX_MAGIC:
        raise DatasetError(
            f"{path}: magic number 0x{magic:08x} is not an IDX unsigned-byte file "
            "(expected 0x00000801 for labels or 0x00000803 for images)"
        )
    file_ndim = magic & 0xFF
    if ndim is not None and file_ndim != ndim:
        raise DatasetError(
            f"{path}: magic number 0x{magic:08x} marks {_IDX_MAGIC[magic]} "
            f"({file_ndim}-d), expected {_IDX_MAGIC[_NDIM_MAGIC[ndim]]} "
            f"(0x{_NDIM_MAGIC[ndim]:08x}, {ndim}-d)"
        )
    header = 4 + 4 * file_ndim
    if len(raw) < header:
        raise DatasetError(
            f"{path}: truncated IDX header ({len(raw)} bytes, need {header} "
            f"for {file_ndim} dimensions)"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(file_ndim))
    count = math.prod(shape)
    if len(raw) != header + count:
        problem = "truncated" if len(raw) < header + count else "has trailing bytes"
        raise DatasetError(
            f"{path}: {problem}: header gives shape {shape}, which needs "
            f"{header + count} bytes ({header} header + {count} data), file holds {len(raw)}"
        )
    # frombuffer over bytes is read-only; callers get an array they own.
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(shape).copy()


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzip-compressed or raw.

    Compression is detected from the content (the gzip magic bytes), not the file name.

    Parameters
    ----------
    path : str or path-like
        The file.
    ndim : {1, 3} or None, default None
        If given, the file must hold this many dimensions: 1 for labels (magic number
        0x00000801), 3 for images (0x00000803). ``None`` accepts either.

    Returns
    -------
    numpy.ndarray of uint8
        Shape ``(n,)`` for labels, ``(n, rows, cols)`` for images; C-contiguous, writable.

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    DatasetError
        Corrupt or truncated gzip stream, unknown magic number, magic number other than the
        one ``ndim`` asks for, or a file size that disagrees with the dimensions in the
        header.
    """
    if ndim is not None and ndim not in _NDIM_MAGIC:
        raise ValueError(f"ndim must be 1, 3 or None, got {ndim!r}")
    path = Path(path)
    return _decode_idx(_read_file(path), path, ndim)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write a uint8 array as an IDX file, the inverse of :func:`read_idx`.

    The gzip stream is written with no file name and a zero timestamp, so equal arrays
    give byte-identical files (this is what makes the shipped sample reproducible).

    Parameters
    ----------
    path : str or path-like
        Destination.
    array : numpy.ndarray of uint8
        Shape ``(n,)`` (labels, magic 0x00000801) or ``(n, rows, cols)`` (images, magic
        0x00000803).
    compress : bool or None, default None
        gzip the output; ``None`` compresses when ``path`` ends in ``.gz``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files written here hold uint8, got dtype {array.dtype}")
    if array.ndim not in _NDIM_MAGIC:
        raise ValueError(f"array must be 1-d (labels) or 3-d (images), got shape {array.shape}")
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    header = _NDIM_MAGIC[array.ndim].to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + np.ascontiguousarray(array).tobytes()
    with open(path, "wb") as f:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as gz:
                gz.write(payload)
        else:
            f.write(payload)
    return path


# ---------------------------------------------------------------------------------------
# The manifest.
# ---------------------------------------------------------------------------------------

_SPLIT_PREFIX = MappingProxyType({"train": "train", "test": "t10k"})


def _idx_stems(split: str) -> tuple[str, str]:
    """(images, labels) file names, without ``.gz``, of one split of an MNIST-style set."""
    prefix = _SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


@dataclass(frozen=True)
class DatasetInfo:
    """What hetnet knows about one dataset.

    Attributes
    ----------
    name : str
        The key in :data:`DATASETS` and the folder name searched for.
    title : str
        Human-readable name.
    source : str
        Where the data comes from (URL).
    licence : str
        The data's licence.
    image_shape : tuple of int
        ``(H, W)`` of one image (one channel).
    n_classes : int
        Number of classes; labels are ``0 .. n_classes - 1``.
    class_names : tuple of str
        Name of each class, by label.
    n_samples : mapping of str to int
        Size of each split of the full set.
    how_to_get : str
        How to obtain the full set; quoted in "not found" errors.
    idx : bool
        Stored as IDX files (searched for on disk); ``False`` for data that comes from a
        Python package.
    sample : str or None
        Folder name of the small sample shipped in the repository's ``datasets/``.
    sample_n_samples : mapping of str to int
        Size of each split of the sample.
    sample_sha256 : mapping of str to str
        SHA-256 of each sample file, checked on every load of the sample.
    """

    name: str
    title: str
    source: str
    licence: str
    image_shape: tuple[int, int]
    n_classes: int
    class_names: tuple[str, ...]
    n_samples: Mapping[str, int]
    how_to_get: str
    idx: bool = True
    sample: str | None = None
    sample_n_samples: Mapping[str, int] = field(default_factory=dict)
    sample_sha256: Mapping[str, str] = field(default_factory=dict)


_DIGIT_NAMES = tuple(str(i) for i in range(10))

#: Manifest of the datasets hetnet can load, by name. ``datasets/MANIFEST.json`` in the
#: repository is written from this by ``datasets/make_sample.py``; a test keeps them equal.
DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando Research)",
        source="https://github.com/zalandoresearch/fashion-mnist",
        licence="MIT",
        image_shape=(28, 28),
        n_classes=10,
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        n_samples=MappingProxyType({"train": 60000, "test": 10000}),
        how_to_get=(
            "install Debian's package (apt-get install dataset-fashion-mnist, which puts it "
            "in /usr/share/datasets/fashion-mnist/), or put the four IDX files from "
            "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) in "
            "$HETNET_DATA/fashion-mnist/"
        ),
        sample="fashion-mnist-sample",
        sample_n_samples=MappingProxyType({"train": 6000, "test": 1000}),
        sample_sha256=MappingProxyType({
            "train-images-idx3-ubyte.gz":
                "74df153e1d736137c085533200d77928ad1330a766dbfab0bc33ffdf137c8b83",
            "train-labels-idx1-ubyte.gz":
                "2f79ac363aa5db62f0fa8e5c6d76afd2f96e347af63b899a85be6c3f255bc024",
            "t10k-images-idx3-ubyte.gz":
                "04516f9d284037ea6cce7310aafaed77e8f8c1547f1127ef4aa754c46f47f8f5",
            "t10k-labels-idx1-ubyte.gz":
                "540f63e62544edb8406d1292429a47e6cdb42e4fa2eaa233f072b34e1f6bc46c",
        }),
    ),
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST handwritten digits (LeCun, Cortes, Burges)",
        source="http://yann.lecun.com/exdb/mnist/",
        licence="CC BY-SA 3.0",
        image_shape=(28, 28),
        n_classes=10,
        class_names=_DIGIT_NAMES,
        n_samples=MappingProxyType({"train": 60000, "test": 10000}),
        how_to_get=(
            "no Debian package ships MNIST (apt-cache search mnist finds only "
            "dataset-fashion-mnist); put the four IDX files from "
            "http://yann.lecun.com/exdb/mnist/ (mirror: "
            "https://ossci-datasets.s3.amazonaws.com/mnist/) in $HETNET_DATA/mnist/"
        ),
    ),
    "digits": DatasetInfo(
        name="digits",
        title="Optical recognition of handwritten digits (UCI), as bundled by scikit-learn",
        source="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        licence="CC BY 4.0",
        image_shape=(8, 8),
        n_classes=10,
        class_names=_DIGIT_NAMES,
        n_samples=MappingProxyType({"all": 1797}),
        how_to_get="pip install scikit-learn (the data ships inside it)",
        idx=False,
    ),
})


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


# ---------------------------------------------------------------------------------------
# Finding the files.
# ---------------------------------------------------------------------------------------


class DatasetLocation(NamedTuple):
    """Where a dataset was found: its folder, and ``"full"`` or ``"sample"``."""

    path: Path
    kind: str


def _idx_file(directory: Path, stem: str) -> Path | None:
    # Raw first: it loads without decompression.
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _full_set_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory``; None if it holds none of them.

    A folder holding some but not all of them is a user's mistake worth reporting rather
    than silently skipping to the next location.
    """
    stems = [stem for split in _SPLIT_PREFIX for stem in _idx_stems(split)]
    found = {stem: _idx_file(directory, stem) for stem in stems}
    if not any(found.values()):
        return None
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise DatasetNotFoundError(
            f"{directory} holds an incomplete set: missing {', '.join(missing)} "
            "(raw or .gz)"
        )
    return found


def _sample_complete(directory: Path, info: DatasetInfo) -> bool:
    present = [(directory / name).is_file() for name in info.sample_sha256]
    if any(present) and not all(present):
        missing = [n for n, p in zip(info.sample_sha256, present) if not p]
        raise DatasetNotFoundError(
            f"{directory} holds an incomplete sample: missing {', '.join(missing)}"
        )
    return all(present)


def find_dataset(name: str, source: str = "auto") -> DatasetLocation:
    """Locate a dataset's folder.

    Parameters
    ----------
    name : str
        ``"fashion-mnist"`` or ``"mnist"`` (a key of :data:`DATASETS` stored as IDX files).
    source : {"auto", "full", "sample"}, default "auto"
        ``"full"``: the full set only; ``"sample"``: the shipped sample only; ``"auto"``:
        the full set if found, else the sample.

    Returns
    -------
    DatasetLocation
        ``(path, kind)``, ``kind`` being ``"full"`` or ``"sample"``.

    Raises
    ------
    DatasetNotFoundError
        Nothing suitable was found (the message lists the folders searched and how to get
        the data), or a folder holds only some of the files.
    ValueError
        Unknown ``name`` or ``source``.
    """
    info = _info(name)
    if not info.idx:
        raise ValueError(f"{name!r} is not stored as files; load it with load_{name}()")
    if source not in ("auto", "full", "sample"):
        raise ValueError(f"source must be 'auto', 'full' or 'sample', got {source!r}")
    kinds = [("full", info.name)] if source in ("auto", "full") else []
    if source in ("auto", "sample") and info.sample:
        kinds.append(("sample", info.sample))
    searched = []
    for kind, folder in kinds:
        for root in _common._search_roots():
            directory = root / folder
            searched.append(directory)
            if kind == "full":
                found = _full_set_files(directory) is not None
            else:
                found = _sample_complete(directory, info)
            if found:
                return DatasetLocation(directory, kind)
    if kinds:
        wanted = " or ".join(f"the {kind} set" for kind, _ in kinds)
        why = f"{wanted} of {name} not found; searched: " + ", ".join(map(str, searched))
    else:
        why = f"hetnet ships no sample of {name}"
    raise DatasetNotFoundError(
        f"{why}. To get the full set: {info.how_to_get}. The folder must hold "
        "{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte, raw or .gz."
    )


# ---------------------------------------------------------------------------------------
# Loading.
# ---------------------------------------------------------------------------------------

def _check_sha256(raw: bytes, path: Path, expected: str) -> None:
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise DatasetError(
            f"{path}: SHA-256 {actual} does not match the recorded {expected}; the sample "
            "is damaged: restore it from the repository (git checkout -- datasets/) or "
            "regenerate it with datasets/make_sample.py"
        )


def _read_split(location: DatasetLocation, info: DatasetInfo, split: str):
    """Images ``(n, H, W)`` and labels ``(n,)``, both uint8, validated against ``info``."""
    images_stem, labels_stem = _idx_stems(split)
    arrays = []
    for stem, ndim in ((images_stem, 3), (labels_stem, 1)):
        if location.kind == "sample":
            path = location.path / f"{stem}.gz"
            raw = _read_file(path)
            _check_sha256(raw, path, info.sample_sha256[path.name])
        else:
            path = _idx_file(location.path, stem)
            if path is None:  # removed since find_dataset looked
                raise DatasetNotFoundError(f"{location.path / stem}(.gz) not found")
            raw = _read_file(path)
        arrays.append((path, _decode_idx(raw, path, ndim)))
    (images_path, images), (labels_path, labels) = arrays
    if images.shape[1:] != info.image_shape:
        raise DatasetError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"{info.name} images are {info.image_shape[0]}x{info.image_shape[1]}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    if labels.size and labels.max() >= info.n_classes:
        raise DatasetError(
            f"{labels_path}: label {labels.max()} out of range for {info.n_classes} classes"
        )
    return images, labels


def _pad_to(images: np.ndarray, size: int | None, name: str) -> np.ndarray:
    """Zero-pad ``(n, H, W)`` images equally on every side to ``(n, size, size)``.

    Padding (not resizing) is how LeNet-5's 32x32 input was made from MNIST's 28x28
    digits (LeCun et al. 1998, section II.A), so strokes keep their pixel values.
    """
    if size is None:
        return images
    h, w = images.shape[1:]
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an int or None, got {size!r}")
    if size < max(h, w) or (size - h) % 2 or (size - w) % 2:
        raise ValueError(
            f"size={size} cannot be reached from the {h}x{w} images of {name} by equal "
            f"zero padding on each side; use {h}, {h + 4} or another {h} + 2k"
        )
    ph, pw = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (ph, ph), (pw, pw)))


def _to_output(images: np.ndarray, labels: np.ndarray, scale: float, normalize: bool,
               flatten: bool):
    """Shape ``(n, H, W)`` uint8 images to ``(n, 1, H, W)`` or ``(n, H*W)``; see loaders."""
    n = images.shape[0]
    X = images.reshape(n, -1) if flatten else images.reshape(n, 1, *images.shape[1:])
    if normalize:
        X = X.astype(np.float32)
        X /= np.float32(scale)
    return np.ascontiguousarray(X), labels.astype(np.int64)


def _load_idx_dataset(name: str, split: str, source: str, normalize: bool, flatten: bool,
                      size: int | None = None):
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    info = _info(name)
    location = find_dataset(name, source)
    if location.kind == "sample" and source == "auto":
        _log.info("full %s set not found; using the %d-image sample in %s",
                  name, info.sample_n_samples[split], location.path)
    images, labels = _read_split(location, info, split)
    return _to_output(_pad_to(images, size, name), labels, 255.0, normalize, flatten)


# One docstring for both IDX loaders, filled in below them, so the two stay in step.
_LOADER_DOC = """Load {title}.

    Parameters
    ----------
    split : {{"train", "test"}}, default "train"
        Which split ({sizes}).
    source : {{"auto", "full", "sample"}}, default "auto"
        {source_doc}
        :func:`find_dataset` says where the files are looked for.
    normalize : bool, default True
        Return float32 scaled to [0, 1] (pixel / 255); ``False`` returns the raw uint8.
    flatten : bool, default False
        Return images as rows, shape ``(n, S * S)``, instead of ``(n, 1, S, S)``.
    size : int or None, default None
        Side ``S`` of the returned images. ``None`` (or 28) keeps the original 28x28;
        ``32`` zero-pads 2 pixels on each side, the 32x32 one-channel input of LeNet-5 and
        of the thesis's image experiments; any ``28 + 2k`` is accepted.

    Returns
    -------
    X : numpy.ndarray
        Shape ``(n, 1, S, S)`` (NCHW) or ``(n, S * S)`` with ``flatten``, ``S`` = 28 unless
        ``size`` says otherwise; float32 in [0, 1], or uint8 with ``normalize=False``.
        C-contiguous.
    y : numpy.ndarray of int64
        Shape ``(n,)``, class indices 0..9 ({classes}).

    Raises
    ------
    DatasetNotFoundError
        The files are not found; the message says how to get them.
    DatasetError
        A file is corrupt (bad gzip, magic number, size or checksum) or the images and
        labels disagree in count.
    """


def load_fashion_mnist(split: str = "train", source: str = "auto", normalize: bool = True,
                       flatten: bool = False, size: int | None = None
                       ) -> tuple[NDArray[Any], NDArray[np.int64]]:
    return _load_idx_dataset("fashion-mnist", split, source, normalize, flatten, size)


def load_mnist(split: str = "train", source: str = "auto", normalize: bool = True,
               flatten: bool = False, size: int | None = None
               ) -> tuple[NDArray[Any], NDArray[np.int64]]:
    return _load_idx_dataset("mnist", split, source, normalize, flatten, size)


load_fashion_mnist.__doc__ = _LOADER_DOC.format(
    title="Fashion-MNIST (Zalando Research; MIT licence)",
    sizes="60,000 / 10,000 images in the full set, 6,000 / 1,000 in the sample",
    source_doc=(
        '``"full"``: the full set, error if absent; ``"sample"``: the sample shipped in\n'
        '        ``datasets/fashion-mnist-sample/``; ``"auto"``: the full set when found,\n'
        '        else the sample.'
    ),
    classes=", ".join(DATASETS["fashion-mnist"].class_names),
)
load_mnist.__doc__ = _LOADER_DOC.format(
    title="MNIST handwritten digits",
    sizes="60,000 / 10,000 images",
    source_doc=(
        'hetnet ships no MNIST sample: ``"auto"`` and ``"full"`` both load the full set,\n'
        '        ``"sample"`` raises :class:`DatasetNotFoundError`.'
    ),
    classes="the digits",
)


def load_digits(normalize: bool = True, flatten: bool = False
                ) -> tuple[NDArray[Any], NDArray[np.int64]]:
    """Load scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes).

    Parameters
    ----------
    normalize : bool, default True
        Return float32 scaled to [0, 1] (pixel / 16, the data's range is 0..16); ``False``
        returns the raw values as uint8.
    flatten : bool, default False
        Return images as rows, shape ``(n, 64)``, instead of ``(n, 1, 8, 8)``.

    Returns
    -------
    X : numpy.ndarray
        Shape ``(1797, 1, 8, 8)`` or ``(1797, 64)``; float32 in [0, 1], or uint8.
    y : numpy.ndarray of int64
        Shape ``(1797,)``, the digit 0..9.

    Raises
    ------
    ImportError
        scikit-learn is not installed.
    """
    bunch = _common._sklearn_bunch("load_digits", "the digits data")
    images = bunch.images.astype(np.uint8)  # float64 holding the integers 0..16
    return _to_output(images, np.asarray(bunch.target), 16.0, normalize, flatten)


