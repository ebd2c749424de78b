"""The runtime: one training or inference step over placed layers.

:class:`Runtime` runs forward, loss, backward, the gradient hooks and the
update; it owns the parameter, gradient and optimiser-state storage per
device (:mod:`.flatparams`), moves arrays between devices
(:mod:`.transfer`) and times steps (:mod:`.timing`).  The model, the
scheduler, the estimators and the CLI use it through this interface.
"""

from .flatparams import ALIGN, FlatGroup
from .step import Runtime, fuse_activations, measure_chain
from .timing import POOL_BYTES, POOL_MAX_ROWS
from .transfer import move_step, transfer

__all__ = ["Runtime", "fuse_activations", "FlatGroup", "ALIGN", "POOL_BYTES", "POOL_MAX_ROWS",
           "measure_chain", "move_step", "transfer"]
