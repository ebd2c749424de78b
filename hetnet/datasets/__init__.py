"""Datasets: IDX files, Fashion-MNIST, MNIST, scikit-learn's digits, CIFAR-10, tabular sets.

This module holds the IDX loaders and the search path; :mod:`hetnet.datasets.cifar` reads
CIFAR-10's binary files, :mod:`hetnet.datasets.tabular` the tabular sets and
:mod:`hetnet.datasets.preprocess` the thesis's preprocessing and splits. All their public
names are importable from ``hetnet.datasets``.

Every loader returns ``(X, y)`` with ``X`` in NCHW layout, ``(n, 1, H, W)`` (or
``(n, H * W)`` with ``flatten=True``), float32 in [0, 1] by default, and ``y`` the int64
class indices, shape ``(n,)``.

Where the files are looked for
------------------------------
For a dataset ``<name>`` (``"fashion-mnist"``, ``"mnist"``) the full set is looked for in
these folders, first match wins:

1. ``$HETNET_DATA/<name>/`` (``HETNET_DATA`` may list several roots, separated by
   ``os.pathsep``);
2. ``<repository>/datasets/<name>/``, the ``datasets/`` folder beside the package in a
   source checkout (absent after a non-editable install);
3. ``hetnet/_datasets/<name>/``, the same folder as installed with the package (it holds
   the shipped sample);
4. ``/usr/share/datasets/<name>/``, where Debian's ``dataset-fashion-mnist`` package puts
   Fashion-MNIST.

A folder holds a set when it has the four IDX files ``{train,t10k}-images-idx3-ubyte`` and
``{train,t10k}-labels-idx1-ubyte``, each raw or gzip-compressed (``.gz``). With
``source="auto"`` and no full set found, the shipped sample ``<name>-sample/`` (searched in
the same roots) is used; only Fashion-MNIST has one.

Errors
------
:class:`DatasetError` (a ``ValueError``) is raised for a corrupt file: bad gzip stream,
wrong magic number, a size that disagrees with the header, image and label counts that
disagree, labels out of range, a sample file whose SHA-256 is not the recorded one.
:class:`DatasetNotFoundError` (both a ``DatasetError`` and a ``FileNotFoundError``) is raised
when files are missing; its message lists the folders searched and how to get the data.
"""

from __future__ import annotations

from ._common import DatasetError, DatasetNotFoundError
from .idx import (
    DATASETS, DatasetInfo, DatasetLocation, find_dataset, load_digits, load_fashion_mnist,
    load_mnist, read_idx, write_idx,
)
from .cifar import (
    CIFAR10_CLASSES, find_cifar10, load_cifar10, read_cifar10_bin, rgb_to_grey,
)
from .tabular import (
    BOSTON_FEATURES, WINE_FEATURES, WINE_QUALITIES, load_boston_housing, load_breast_cancer,
    load_wine_quality, read_boston_csv, read_wine_quality_csv,
)
from .preprocess import (
    THESIS_IMAGE_SETS, THESIS_TABULAR_SETS, ThesisPreprocessor, correlation_filter,
    thesis_image_split, thesis_preprocess, thesis_tabular_split, train_val_test_split,
)

__all__ = [
    "DATASETS", "DatasetError", "DatasetInfo", "DatasetLocation", "DatasetNotFoundError",
    "describe", "find_dataset", "load_digits", "load_fashion_mnist", "load_mnist", "read_idx",
    "write_idx",
] + [
    "BOSTON_FEATURES", "CIFAR10_CLASSES", "THESIS_IMAGE_SETS", "THESIS_TABULAR_SETS",
    "ThesisPreprocessor", "WINE_FEATURES", "WINE_QUALITIES", "correlation_filter",
    "find_cifar10", "load_boston_housing", "load_breast_cancer", "load_cifar10",
    "load_wine_quality", "read_boston_csv", "read_cifar10_bin", "read_wine_quality_csv",
    "rgb_to_grey", "thesis_image_split", "thesis_preprocess", "thesis_tabular_split",
    "train_val_test_split",
]


def describe() -> str:
    """Describe the known datasets: source, licence, size and where each is found here.

    Returns
    -------
    str
        One paragraph per entry of :data:`DATASETS`.
    """
    lines = []
    for info in DATASETS.values():
        sizes = ", ".join(f"{split} {n:,}" for split, n in info.n_samples.items())
        lines.append(f"{info.name}: {info.title}")
        lines.append(f"  source:  {info.source}")
        lines.append(f"  licence: {info.licence}")
        lines.append(f"  size:    {sizes}; images {info.image_shape[0]}x{info.image_shape[1]}, "
                     f"{info.n_classes} classes")
        if info.sample:
            sample_sizes = ", ".join(f"{s} {n:,}" for s, n in info.sample_n_samples.items())
            lines.append(f"  sample:  {info.sample} ({sample_sizes})")
        if info.idx:
            try:
                where = "{1} set in {0}".format(*find_dataset(info.name))
            except DatasetNotFoundError:
                where = f"not found; to get it: {info.how_to_get}"
            except DatasetError as exc:
                where = f"unusable: {exc}"
        else:
            where = "from scikit-learn"
        lines.append(f"  here:    {where}")
    lines.extend(_describe_others())
    return "\n".join(lines)


def _describe_others() -> list[str]:
    """Where the sets outside :data:`DATASETS` (CIFAR-10, the tabular sets) are found."""
    from . import cifar, tabular  # noqa: F401 (the modules, for their finders)

    out = []
    probes = (
        ("cifar-10", "CIFAR-10, binary version, read in grey or colour", cifar.find_cifar10),
        ("wine-quality", "Wine Quality (UCI), red and white",
         lambda: tabular.find_tabular_file("wine-quality", ("winequality-red.csv",))),
        ("boston-housing", "Boston Housing (StatLib / UCI)",
         lambda: (tabular.find_tabular_file("boston-housing", tabular._BOSTON_FILES)
                  or tabular._boston_package_file())),
    )
    for name, title, probe in probes:
        try:
            found = probe()
            where = (f"found: {found}" if found
                     else "not found (see datasets/README.md for how to get it)")
        except DatasetNotFoundError:
            where = "not found (see datasets/README.md for how to get it)"
        except DatasetError as exc:
            where = f"not found or unusable: {exc}"
        out += [f"{name}: {title}", f"  here:    {where}"]
    out += ["breast-cancer: Breast Cancer Wisconsin (diagnostic)", "  here:    from scikit-learn"]
    return out
