"""Population metaheuristics: SHADE, SHADE-ILS and their hybrids with gradient descent.

``minimize`` runs them on a plain (vectorised) function; the optimiser classes
are step engines over flat vectors (see :mod:`.base`) that a training loop
drives one generation at a time.
"""

from .base import Metaheuristic, OptimizeResult
from .problem import Problem
from .shade import SHADE
from .shadeils import SHADEILS
from .minimize import minimize

#: the metaheuristics by the names the estimators and ``hetnet train`` take:
#: name -> (class, hybridised with gradient descent)
BY_NAME = {"shade": (SHADE, False), "shade-ils": (SHADEILS, False),
           "shade-gd": (SHADE, True), "shade-ils-gd": (SHADEILS, True)}

__all__ = ["SHADE", "SHADEILS", "Metaheuristic", "OptimizeResult", "Problem", "minimize",
           "BY_NAME"]
