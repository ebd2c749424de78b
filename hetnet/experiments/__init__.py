"""Experiments from the source material, runnable end to end.

:mod:`hetnet.experiments.thesis_b`: the training-techniques thesis's grid
(its table 1), ``python -m hetnet experiment thesis-b``.
"""

from .thesis_b import (ExperimentError, PartNotAvailableError, PARTS, Protocol, STRATEGIES,
                       run_thesis_b)

__all__ = ["ExperimentError", "PartNotAvailableError", "PARTS", "Protocol", "STRATEGIES",
           "run_thesis_b"]
