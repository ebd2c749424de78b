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

__all__ = ["SHADE", "SHADEILS", "Metaheuristic", "OptimizeResult", "Problem", "minimize"]
