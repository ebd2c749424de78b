"""Concurrent use of a model: refused with a clear error, not raced.

A :class:`~hetnet.Sequential` holds per-call state (the placement, the
buffer pool, the optimizer's step, the batch in flight), so one model used
from two threads at once would mix two calls' data.  Each public entry
point (``fit``, ``predict*``, ``evaluate``, ``explain``, weight changes)
therefore holds the model's lock while it runs; a second thread that
arrives meanwhile gets a :class:`ConcurrentUseError` at once instead of
waiting or racing.  The same thread may re-enter (a callback in ``fit``
may call ``evaluate`` or ``get_weights``).

Separate models are independent: a device object is shared by every model
of the process that names it, and its scratch buffers are per thread, so
two models in two threads on ``"cpu"`` or ``"numpy"`` run at once and give
the single-threaded results.  An OpenCL device keeps per-device launch
state (:attr:`hetnet.devices.base.Device.thread_safe` is False): models in
two threads on one OpenCL device are refused in the same way.
"""

import functools
import threading
import weakref


class ConcurrentUseError(RuntimeError):
    """A model (or a device that is not thread-safe) is in use by another thread."""


_device_locks = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def _device_lock(dev):
    with _registry_lock:
        lock = _device_locks.get(dev)
        if lock is None:
            lock = _device_locks[dev] = threading.RLock()
        return lock


def _model_lock(model):
    lock = model.__dict__.get("_call_lock")
    if lock is None:
        with _registry_lock:
            lock = model.__dict__.setdefault("_call_lock", threading.RLock())
    return lock


def exclusive(method):
    """Run ``method`` holding the model's lock (and the locks of the
    non-thread-safe devices it runs on); another thread gets a
    :class:`ConcurrentUseError`."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        lock = _model_lock(self)
        if not lock.acquire(blocking=False):
            raise ConcurrentUseError(
                f"{name}() called while another thread is running this model; a model serves "
                "one thread at a time (use one model per thread, e.g. hetnet.load of a saved "
                "file in each)")
        held = []
        try:
            runtime = getattr(self, "runtime", None)
            devices = runtime.devices_in_use() if runtime is not None else []
            for dev in devices:
                if getattr(dev, "thread_safe", True):
                    continue
                dlock = _device_lock(dev)
                if not dlock.acquire(blocking=False):
                    raise ConcurrentUseError(
                        f"{name}(): device {dev.name} is in use by a model in another thread; "
                        "OpenCL devices serve one thread at a time")
                held.append(dlock)
            return method(self, *args, **kwargs)
        finally:
            for dlock in held:
                dlock.release()
            lock.release()

    return wrapper


__all__ = ["ConcurrentUseError", "exclusive"]
