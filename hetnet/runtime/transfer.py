"""Moving arrays and placed layers between devices."""


def transfer(x, src, dst):
    """Copy a device array from ``src`` to ``dst`` through the host (``x``
    itself when they are the same device)."""
    if src is dst:
        return x
    return dst.asarray(src.to_host(x), dtype=x.dtype)


def move_step(step, device, optimizer=None, slots=()):
    """Move one step's parameters to ``device``, and the optimizer's state
    for them (``slots``: their indices in the optimizer's parameter order)."""
    src = step.device
    if src is device:
        return
    if optimizer is not None and step.params:
        optimizer.move_state(list(slots), src, device)
    step.move_to(device)


__all__ = ["transfer", "move_step"]
