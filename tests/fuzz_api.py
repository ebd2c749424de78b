"""Hostile and careless calls across the public API, with the outcome of each.

Run: ``python tests/fuzz_api.py`` (from a source checkout).  Each case runs
in a child process (a crash of the interpreter counts as a crash, not the
end of the run) and is classed as

* ``clear``: a ValueError/TypeError/FloatingPointError/IndexError/
  RuntimeError (ConcurrentUseError)/OSError whose message names what was
  wrong (the case's keyword),
* ``accepted``: a call that should work, worked and gave a valid answer,
* ``unclear``: another exception type, or a message without the keyword,
* ``silent``: a call that should have been refused returned normally,
* ``crash``: the child died.

The last line gives the figures (the goal: 0 crashes, 0 silent, 0 unclear).
"""

import json
import multiprocessing as mp
import sys
import tempfile
import threading

import numpy as np

CASES = []


def case(keyword, expect_error=True):
    def wrap(fn):
        CASES.append((fn.__name__, fn, keyword, expect_error))
        return fn
    return wrap


def _hn():
    import hetnet as hn
    return hn


def conv():
    hn = _hn()
    return hn.Sequential([hn.Conv2D(1, 2, 3, padding=1), hn.ReLU(), hn.MaxPool2D(2),
                          hn.Flatten(), hn.Dense(8, 3)], seed=0, device="cpu",
                         input_shape=(1, 4, 4))


def X(n=8):
    return np.random.default_rng(0).random((n, 1, 4, 4)).astype(np.float32)


def y(n=8):
    return np.random.default_rng(0).integers(0, 3, n)


# ---- inference arguments
for _bs in (-1, 0, 2.5, True, "8", None, 10 ** 30):
    for _m in ("predict", "predict_proba", "predict_logits", "evaluate"):
        for _dev in ("cpu", "auto"):
            def _f(bs=_bs, m=_m, dev=_dev):
                hn = _hn()
                model = hn.Sequential([hn.Flatten(), hn.Dense(16, 3)], device=dev,
                                      input_shape=(1, 4, 4))
                args = (X(), y()) if m == "evaluate" else (X(),)
                out = getattr(model, m)(*args, batch_size=bs)
                return out
            _f.__name__ = f"{_m}(batch_size={_bs!r}, device={_dev})"
            CASES.append((_f.__name__, _f, "batch_size", _bs not in (10 ** 30,)))

# ---- inputs
for _name, _x in [("nan", np.full((2, 1, 4, 4), np.nan)), ("inf", np.full((2, 16), np.inf)),
                  ("1e39 float64", np.full((2, 16), 1e39)), ("str", np.array([["a"] * 16] * 2)),
                  ("1-D", np.zeros(16)), ("empty", np.zeros((0, 16))),
                  ("wrong shape", np.zeros((2, 1, 5, 5))), ("ragged", [[1, 2], [3]]),
                  ("complex", np.zeros((2, 16), np.complex64)), ("None", None)]:
    def _f(x=_x):
        return conv().predict(x)
    _f.__name__ = f"predict(X={_name})"
    CASES.append((_f.__name__, _f, "X", True))

# ---- targets
for _name, _y in [("-1", np.array([-1, 0, 1, 2] * 2)), ("3", np.array([3] * 8)),
                  ("1.5", np.full(8, 1.5)), ("nan", np.full(8, np.nan)),
                  ("short", np.zeros(3, int)), ("one-hot wrong", np.zeros((8, 4))),
                  ("str", np.array(["a"] * 8))]:
    def _f(t=_y):
        return conv().fit(X(), t)
    _f.__name__ = f"fit(y={_name})"
    CASES.append((_f.__name__, _f, "y", True))

# ---- optimisers, schedules
for _expr, _kw in [("SGD(lr=inf)", "lr"), ("SGD(lr=nan)", "lr"), ("SGD(lr=-1)", "lr"),
                   ("SGD(weight_decay=inf)", "weight_decay"), ("Adam(eps=inf)", "eps"),
                   ("Adam(beta1=1)", "beta1"), ("RMSProp(alpha=nan)", "alpha"),
                   ("SGD(momentum=1.0)", "momentum"), ("SGD(clip_norm=0)", "clip_norm")]:
    def _f(expr=_expr):
        hn = _hn()
        return eval("hn." + expr, {"hn": hn, "inf": float("inf"), "nan": float("nan")})
    _f.__name__ = _expr
    CASES.append((_expr, _f, _kw, True))

for _val in (float("nan"), -1.0, float("inf"), 1e30):
    def _f(v=_val):
        return conv().fit(X(), y(), epochs=2, lr_schedule=lambda s, t: v)
    _f.__name__ = f"fit(lr_schedule -> {_val})"
    CASES.append((_f.__name__, _f, "lr", True))


@case("lr")
def optimizer_lr_set_to_nan_between_fits():
    m = conv()
    m.fit(X(), y())
    m.optimizer.lr = float("nan")
    return m.fit(X(), y())


# ---- weights
for _name in ("nan", "inf", "None", "shape", "count", "str"):
    def _f(kind=_name):
        m = conv()
        w = m.get_weights()
        if kind == "nan":
            w[-1] = np.full_like(w[-1], np.nan)
        elif kind == "inf":
            w[-1] = np.full_like(w[-1], np.inf)
        elif kind == "None":
            w[-1] = None
        elif kind == "shape":
            w[-1] = w[-1][:-1]
        elif kind == "count":
            w = w[:-1]
        else:
            w[-1] = "abc"
        before = [a.copy() for a in m.get_weights()]
        try:
            m.set_weights(w)
        finally:
            if not all(np.array_equal(a, b) for a, b in zip(m.get_weights(), before)):
                raise AssertionError("half-updated model")
    _f.__name__ = f"set_weights({_name})"
    CASES.append((_f.__name__, _f, "weights", True))


# ---- construction
for _expr, _kw in [("Sequential([hn.Dense(4, 2)], input_shape=(4.7,))", "input_shape"),
                   ("Sequential([hn.Dense(4, 2)], input_shape=(0,))", "input_shape"),
                   ("Sequential([hn.Dense(4, 2)], seed=-1)", "seed"),
                   ("Sequential([hn.Dense(4, 2)], seed=1.5)", "seed"),
                   ("Sequential([], )", "layer"), ("Sequential([1])", "layer"),
                   ("Dense(float('inf'), 3)", "in_features"), ("Dense(4, 2.5)", "out_features"),
                   ("Conv2D(float('nan'), 2, 3)", "in_channels"),
                   ("Conv2D(1, 2, 2.5)", "kernel_size"), ("Conv2D(1, 2, 3, stride=0)", "stride"),
                   ("Dropout(1.5)", "p"), ("Sequential([hn.Dense(4,2)], loss='hinge')", "loss"),
                   ("Sequential([hn.Dense(4,2)], device='tpu')", "tpu"),
                   ("calibrate('tpu')", "tpu")]:
    def _f(expr=_expr):
        hn = _hn()
        return eval("hn." + expr, {"hn": hn, "inf": float("inf"), "nan": float("nan")})
    _f.__name__ = _expr
    CASES.append((_expr, _f, _kw, True))


@case("already belongs")
def layer_reused_in_a_second_model():
    hn = _hn()
    m = conv()
    m.fit(X(), y())
    return hn.Sequential(m.layers, input_shape=(1, 4, 4))


@case("validation_data")
def validation_data_iterator():
    return conv().fit(X(), y(), validation_data=iter([X(), y()]))


@case("repeats")
def explain_repeats_0():
    return conv().explain(4, repeats=0)


@case("HETNET_GPU")
def hetnet_gpu_garbage():
    import os
    os.environ["HETNET_GPU"] = "garbage"
    hn = _hn()
    return hn.Sequential([hn.Dense(4, 2)], device="auto")


@case("float32")
def data_overflowing_float32():
    return conv().fit(np.full((8, 1, 4, 4), 1e39), y())


@case("another thread")
def concurrent_fit_and_predict():
    hn = _hn()
    from hetnet import callbacks
    m = conv()
    go, done = threading.Event(), threading.Event()

    class Hold(callbacks.Callback):
        def on_epoch_end(self, model, epoch, logs):
            go.set()
            done.wait(10)

    t = threading.Thread(target=m.fit, args=(X(), y()), kwargs={"callbacks": [Hold()]})
    t.start()
    go.wait(10)
    try:
        return m.predict(X())
    finally:
        done.set()
        t.join()


# ---- device operations
@case("arg-max")
def cpu_maxpool_backward_out_of_range():
    from hetnet.devices.cpu import CPUDevice
    am = np.full((1, 1, 2, 2), 10 ** 6, np.int32)
    return CPUDevice().maxpool2d_backward(np.ones((1, 1, 2, 2), np.float32), am, (1, 1, 4, 4))


@case("elements")
def cpu_sgd_update_short_gradient():
    from hetnet.devices.cpu import CPUDevice
    d = CPUDevice()
    return d.sgd_update(np.zeros(100, np.float32), np.zeros(3, np.float32), None, 0.1)


@case("inner sizes")
def cpu_gemm_mismatched_k():
    from hetnet.devices.cpu import CPUDevice
    return CPUDevice().gemm(np.ones((3, 4), np.float32), np.ones((5, 2), np.float32))


# ---- files (names of fields are checked in tests/test_harden_files.py)
def _file_case(name, make):
    def _f():
        hn = _hn()
        folder = tempfile.mkdtemp()
        path = make(folder)
        return hn.load(path)
    _f.__name__ = f"load({name})"
    CASES.append((_f.__name__, _f, ".np", True))    # the message names the file


def _crafted(kind):
    def make(folder):
        import sys as _s
        _s.path.insert(0, "tests")
        from test_harden_files import crafted
        import pathlib
        return crafted(pathlib.Path(folder))[kind]
    return make


for _kind in ["no-config", "not-json", "deep-json", "config-list", "bad-format", "no-layers",
              "layers-str", "layers-empty", "layer-not-dict", "layer-unknown", "layer-kwargs",
              "layer-config-list", "layer-inf", "huge-dense", "bad-loss", "loss-list",
              "seed-str", "seed-neg", "shape-float", "shape-str", "shape-mismatch",
              "missing-weight", "extra-weight", "weight-shape", "weight-nan", "weight-int",
              "config-array", "obj-npy", "text", "empty", "truncated", "object-array"]:
    _file_case(_kind, _crafted(_kind))


# ---- things that must work
@case("", expect_error=False)
def cross_entropy_large_logits():
    from hetnet.devices.cpu import CPUDevice
    d = CPUDevice()
    loss, _ = d.softmax_cross_entropy(np.full((1, 3), 1e8, np.float32), np.zeros(1, np.int32))
    if abs(float(loss[0]) - np.log(3)) > 1e-5:
        raise AssertionError(f"loss {loss[0]}, expected {np.log(3)}")


@case("", expect_error=False)
def uint8_images_train_like_scaled_floats():
    X8 = (X() * 255).astype(np.uint8)
    a, b = conv(), conv()
    a.fit(X8, y(), epochs=2)
    b.fit(X8.astype(np.float32) / 255.0, y(), epochs=2)
    if not all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights())):
        raise AssertionError("uint8 trained differently from the scaled floats")


DOCUMENTED = ("ValueError", "TypeError", "FloatingPointError", "IndexError", "RuntimeError",
              "ConcurrentUseError", "OSError", "FileNotFoundError", "IsADirectoryError",
              "ImportError")


def _run(i, q):
    name, fn, keyword, expect_error = CASES[i]
    try:
        fn()
        q.put(("ok", ""))
    except AssertionError as exc:
        q.put(("assert", str(exc)))
    except BaseException as exc:   # noqa: BLE001 -- classed below
        q.put((type(exc).__name__, str(exc)))


def classify(result, keyword, expect_error):
    kind, msg = result
    if kind == "crash":
        return "crash"
    if kind == "assert":
        return "silent"
    if kind == "ok":
        return "silent" if expect_error else "accepted"
    if not expect_error:
        return "unclear"
    if kind in DOCUMENTED and keyword.lower() in msg.lower():
        return "clear"
    return "unclear"


def main():
    ctx = mp.get_context("fork")
    counts = {"clear": 0, "accepted": 0, "unclear": 0, "silent": 0, "crash": 0}
    bad = []
    for i, (name, _, keyword, expect_error) in enumerate(CASES):
        q = ctx.Queue()
        p = ctx.Process(target=_run, args=(i, q))
        p.start()
        p.join(120)
        if p.exitcode != 0 or q.empty():
            result = ("crash", f"exit code {p.exitcode}")
        else:
            result = q.get()
        outcome = classify(result, keyword, expect_error)
        counts[outcome] += 1
        if outcome in ("unclear", "silent", "crash"):
            bad.append((outcome, name, result))
    for outcome, name, result in bad:
        print(f"{outcome:8} {name}: {result[0]}: {result[1][:200]}")
    print(json.dumps({"cases": len(CASES), **counts}))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
