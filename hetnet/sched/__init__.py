"""The scheduler: which device runs each step.

- :mod:`.costmodel`: per-device cost tables (calibration, caching, prediction).
- :mod:`.planner`: the cheapest placement of a chain of steps from those tables.
- :mod:`.placement`: the policies (one device, a map, ``"auto"``) and the
  confirmation of ``"auto"``'s choice by timed steps.
- :mod:`.hostspeed`: a probe of the host's own speed.

The scheduler never sees a model: it gets a :class:`~.placement.Chain` (the
steps' cost geometry and a "measure this placement" callable).
"""

from .placement import Chain, Placement

__all__ = ["Chain", "Placement"]
