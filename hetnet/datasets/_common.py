"""What every dataset reader shares: its errors, the folders searched for data, and
the data sets scikit-learn ships."""

from __future__ import annotations

import importlib
import os
from pathlib import Path


class DatasetError(ValueError):
    """A dataset file is corrupt or does not hold what it should."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset, or one of its files, could not be found."""


#: The repository's ``datasets/`` folder; absent after a non-editable install.
_REPO_DATASETS = Path(__file__).resolve().parent.parent.parent / "datasets"
#: The same folder installed inside the package (``hetnet._datasets``).
_PACKAGE_DATASETS = Path(__file__).resolve().parent.parent / "_datasets"
#: Where Debian's dataset-* packages install.
_SYSTEM_DATASETS = Path("/usr/share/datasets")


def _search_roots() -> list[Path]:
    """Folders that may hold ``<name>/`` or ``<name>-sample/``, in search order."""
    env = os.environ.get("HETNET_DATA", "")
    roots = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return roots + [_REPO_DATASETS, _PACKAGE_DATASETS, _SYSTEM_DATASETS]


def _sklearn_bunch(loader: str, what: str):
    """Call ``sklearn.datasets.<loader>()``, for a data set that scikit-learn ships.

    Parameters
    ----------
    loader : str
        The name of the ``sklearn.datasets`` function, e.g. ``"load_digits"``.
    what : str
        What the data is, for the error message (``"the digits data"``).

    Returns
    -------
    sklearn.utils.Bunch

    Raises
    ------
    ImportError
        scikit-learn is not installed; the message names ``loader`` and how to install it.
    """
    try:
        sk_datasets = importlib.import_module("sklearn.datasets")
    except ImportError as exc:
        raise ImportError(
            f"{loader} needs scikit-learn, which ships {what}: pip install scikit-learn"
        ) from exc
    return getattr(sk_datasets, loader)()
