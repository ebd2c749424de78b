"""Make the shipped Fashion-MNIST sample and datasets/MANIFEST.json from the full set.

The sample holds, for each of the 10 classes, the first 600 training images and the first
100 test images of that class in the full set, kept in their original order: 6,000 train
and 1,000 test images, exactly balanced. The selection involves no randomness and the
gzip streams carry no name or timestamp, so a rerun gives the same files (byte for byte
with the same zlib; another zlib may compress differently, the decoded data stays equal).

Usage (from the repository root)::

    python datasets/make_sample.py [--full DIR] [--per-class-train 600] [--per-class-test 100]

``--full`` defaults to wherever :func:`hetnet.datasets.find_dataset` finds the full set
(``$HETNET_DATA/fashion-mnist``, ``datasets/fashion-mnist``, then
``/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist``).

After running it, copy the printed SHA-256 values into ``sample_sha256`` in
``hetnet/datasets/__init__.py`` (the loader checks them; tests/test_datasets.py checks that the
module, the manifest and the files agree).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hetnet.datasets import (  # noqa: E402  (needs the sys.path entry above)
    DATASETS, find_dataset, read_idx, write_idx,
)

NAME = "fashion-mnist"


def first_per_class(labels: np.ndarray, per_class: int, n_classes: int) -> np.ndarray:
    """Indices of the first ``per_class`` items of each class, in ascending order.

    Parameters
    ----------
    labels : numpy.ndarray, shape (n,)
        Class index of each item.
    per_class : int
        How many to take of each class.
    n_classes : int
        Number of classes; each must have at least ``per_class`` items.

    Returns
    -------
    numpy.ndarray of int64, shape (per_class * n_classes,)
    """
    chosen = []
    for c in range(n_classes):
        where = np.flatnonzero(labels == c)
        if where.size < per_class:
            raise ValueError(f"class {c} has {where.size} items, fewer than {per_class}")
        chosen.append(where[:per_class])
    return np.sort(np.concatenate(chosen))


def _plain(value):
    """JSON-ready copy: mappings to dicts, tuples to lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def manifest_datasets() -> dict:
    """:data:`hetnet.datasets.DATASETS` as plain JSON data.

    The sample checksums are left out here: they are listed with the sample's files.
    """
    return {name: _plain({f.name: getattr(info, f.name) for f in dataclasses.fields(info)
                          if f.name != "sample_sha256"})
            for name, info in DATASETS.items()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=Path, default=None,
                        help="folder holding the full Fashion-MNIST IDX files")
    parser.add_argument("--per-class-train", type=int, default=600)
    parser.add_argument("--per-class-test", type=int, default=100)
    args = parser.parse_args(argv)

    info = DATASETS[NAME]
    full = args.full if args.full is not None else find_dataset(NAME, "full").path
    out = HERE / info.sample
    out.mkdir(exist_ok=True)

    made_from, files, class_counts, sizes = {}, {}, {}, {}
    for split, prefix, per_class in (("train", "train", args.per_class_train),
                                     ("test", "t10k", args.per_class_test)):
        stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        sources = [full / f"{s}.gz" if (full / f"{s}.gz").is_file() else full / s
                   for s in stems]
        images = read_idx(sources[0], ndim=3)
        labels = read_idx(sources[1], ndim=1)
        keep = first_per_class(labels, per_class, info.n_classes)
        for src, array in zip(sources, (images[keep], labels[keep])):
            dest = write_idx(out / f"{src.name.removesuffix('.gz')}.gz", array)
            made_from[src.name] = _sha256(src)
            files[dest.name] = {"sha256": _sha256(dest), "bytes": dest.stat().st_size}
        sizes[split] = int(keep.size)
        class_counts[split] = np.bincount(labels[keep], minlength=info.n_classes).tolist()

    manifest = {
        "about": "Datasets hetnet knows (hetnet.datasets.DATASETS) and the samples shipped "
                 "in this folder. Written by datasets/make_sample.py; do not edit by hand.",
        "datasets": manifest_datasets(),
        "samples": {
            info.sample: {
                "of": NAME,
                "source": info.source,
                "licence": info.licence,
                "made_by": "datasets/make_sample.py",
                "selection": (f"for each class, the first {args.per_class_train} training "
                              f"and first {args.per_class_test} test images of the full set, "
                              "in their original order"),
                "made_from": made_from,
                "n_samples": sizes,
                "class_counts": class_counts,
                "files": files,
            },
        },
    }
    (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")

    total = sum(f["bytes"] for f in files.values())
    print(f"wrote {out} ({total:,} bytes) and {HERE / 'MANIFEST.json'}")
    print("sample_sha256 for hetnet/datasets/__init__.py:")
    for name, f in files.items():
        print(f'            "{name}":\n                "{f["sha256"]}",')
    return 0


if __name__ == "__main__":
    sys.exit(main())
