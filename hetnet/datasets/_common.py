"""What every dataset reader shares: its errors, and the folders searched for data."""

from __future__ import annotations

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
