"""Sequential: a chain of layers and a fused loss (container, build,
weights, placement, inference, report).  Steps run through
:class:`hetnet.runtime.Runtime`; the fit loop is :mod:`hetnet.model.fit`."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import (check_X, check_targets, check_sample_weight, check_positive_int,
                           check_input_shape, check_weight_list)
from ..callbacks import Callback
from ..devices import Device
from ..distributed import Context
from ..layers import Layer
from ..losses import get_loss
from ..metrics import check_metrics, score
from ..runtime import Runtime, timing
from ..sched.hostspeed import probe
from ..sched.fusion import FusionPolicy, FusionUnsupported
from ..sched.placement import Chain, Placement
from ..metaheuristics import Metaheuristic
from ..optim import Optimizer
from ..schedules import Schedule
from . import evolve as _evolve
from . import fit as _fit
from . import io
from .fit import History
from .guard import exclusive
from .lrfind import LRFindResult


class Sequential:
    """A feed-forward network trained with a fused loss.

    Parameters
    ----------
    layers : list of Layer
        The last layer emits logits (no softmax needed for cross-entropy).
    loss : {"cross_entropy", "binary_cross_entropy", "mse", "mae"}
        Mean over the batch.  Cross-entropy takes class indices or one-hot
        labels and fuses softmax; binary cross-entropy fuses sigmoid.
    device : str, Device or list
        ``"auto"`` (default): each layer on the device where the planner
        (:mod:`hetnet.sched.planner`, from costs measured on this machine) predicts
        the step is fastest, re-planned when the batch size changes; with no
        GPU that is simply the CPU.  ``"cpu"``, ``"gpu"``, ``"opencl:P:D"``,
        ``"numpy"`` or a Device: every layer there.  A list with one device
        per layer: that placement exactly.
    seed : int, optional
        Seeds initialisation and shuffling: the same seed gives the same
        weights and, on the same placement, the same training run to the
        bit.  Under ``"auto"`` with a GPU the placement is chosen from timed
        steps and may differ between runs; devices agree to rounding.
    input_shape : tuple, optional
        Per-sample input shape; without it the model is built by the first
        ``fit``/``predict`` from the data.
    fuse : {"auto", "always", "never"}
        Whole-chain fusion on an OpenCL GPU (:mod:`hetnet.runtime.fused`:
        a training step in three kernels, the data set resident there).
        ``"auto"`` (default): used where timed steps show it faster than
        the layer-by-layer plan at that batch size
        (:class:`hetnet.sched.fusion.FusionPolicy`); ``"always"``: used, or
        :class:`hetnet.runtime.fused.FusionUnsupported` says why it cannot
        be; ``"never"``: layer by layer.  :meth:`explain` says what was
        chosen and why.  Fused: Conv2D, Dense, MaxPool2D, AvgPool2D,
        Flatten; in inference also a BatchNorm right after a Conv2D or Dense
        (folded into it); a chain with BatchNorm trains layer by layer.
    """

    def __init__(self, layers: Sequence[Layer], loss: str = "cross_entropy",
                 device: str | Device | Sequence[str | Device] = "auto", seed: int | None = None,
                 input_shape: Sequence[int] | None = None, fuse: str = "auto") -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {layer!r}, not a hetnet Layer")
        if len({id(layer) for layer in layers}) != len(layers):
            raise ValueError("the same layer object appears twice; create a new one for each position")
        _claim(layers, self)
        self.layers = layers
        self.loss = get_loss(loss)
        if isinstance(device, (list, tuple)) and len(device) != len(layers):
            raise ValueError(f"a per-layer device map needs {len(layers)} entries, got {len(device)}")
        if seed is not None and (isinstance(seed, (bool, np.bool_))
                                 or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
        self.placement = Placement(device)
        self.fusion = FusionPolicy(fuse)
        self.device = self.placement.primary
        self.seed = seed
        self.input_shape = None
        self._optimizer = None
        self.history = None
        self.runtime = None      # hetnet.runtime.Runtime, made by build
        if input_shape is not None:
            self.build(input_shape)

    def __repr__(self):
        layers = ", ".join(repr(layer) for layer in self.layers)
        shape = f", input_shape={self.input_shape}" if self.built else ""
        pl = self.placement
        device = ("auto" if pl.policy == "auto" else pl.candidates[0].name if pl.policy == "fixed"
                  else [d.name for d in pl.layer_map])
        return f"Sequential([{layers}], loss={self.loss.name!r}, device={device!r}{shape})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_call_lock", None)   # a lock held by a call does not travel (copy, pickle)
        state.pop("_distributed", None)     # nor a fit's MPI context
        return state

    # --------------------------------------------------------------- build
    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def build(self, input_shape: Sequence[int]) -> Sequential:
        """Create the parameters for per-sample ``input_shape`` (e.g. (1, 28, 28))."""
        input_shape = check_input_shape(input_shape)
        _claim(self.layers, self)
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        rng = np.random.default_rng(seeds[0])
        self._shuffle_rng = np.random.default_rng(seeds[1])
        shape = input_shape
        for i, layer in enumerate(self.layers):
            shape = layer.build(self.placement.build_device(i), shape, rng)
        if len(shape) != 1:
            raise ValueError(f"the last layer must output (N, k) logits, got per-sample shape {shape}"
                             " (add Flatten and Dense layers)")
        self.input_shape = input_shape
        self.n_outputs = shape[0]
        self.runtime = Runtime(self.layers, self.loss, self._optimizer)
        return self

    @property
    def optimizer(self) -> Optimizer | Metaheuristic | None:
        """The optimizer :meth:`fit` trains with (kept across calls)."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: Optimizer | Metaheuristic | None) -> None:
        self._optimizer = value
        if self.runtime is not None:
            self.runtime.optimizer = value

    @property
    def _steps(self):
        """The steps as they run (activations fused); []: not built."""
        return self.runtime.steps if self.runtime is not None else []

    def _require_built(self):
        if not self.built:
            raise RuntimeError("the model has no weights yet: call fit(), build(input_shape) "
                               "or pass input_shape= to Sequential")

    # -------------------------------------------------------------- weights
    def _param_arrays(self):
        return [layer.params[k] for layer in self.layers for k in layer.params]

    def _param_slots(self, step):
        return self.runtime.param_slots(step)

    def get_weights(self) -> list[NDArray[np.float32]]:
        """Parameters, and state such as BatchNorm's running statistics, as
        numpy arrays in layer order (each layer's :meth:`Layer.get_weights`)."""
        self._require_built()
        return [w for layer in self.layers for w in layer.get_weights()]

    @exclusive
    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        """Load parameters from a list shaped like :meth:`get_weights`."""
        self._require_built()
        # every array is checked before any is applied: a bad one leaves the model as it was
        weights = check_weight_list(weights, self.get_weights())
        i = 0
        for layer in self.layers:
            k = layer.n_weights
            layer.set_weights(weights[i:i + k])
            i += k
        if self.optimizer is not None:
            self.optimizer.reset()

    def flat_weights(self) -> NDArray[np.float64]:
        """Every parameter in one float32 vector ``(n_params,)``: the arrays
        of :meth:`get_weights`, raveled and concatenated in that order."""
        self._require_built()
        return self.runtime.flat_weights()

    @exclusive
    def set_flat_weights(self, v: ArrayLike) -> None:
        """Load every parameter from a vector laid out as :meth:`flat_weights`
        (the optimizer's state is kept: this is a step in weight space, as
        a line search takes)."""
        self._require_built()
        self.runtime.set_flat_weights(v)

    @exclusive
    def loss_and_flat_gradient(self, v: ArrayLike, X: ArrayLike, y: ArrayLike,
                               sample_weight: ArrayLike | None = None
                               ) -> tuple[float, NDArray[np.float64]]:
        """``(loss, gradient)`` at flat weights ``v`` on one batch of all of
        ``X``: the loss a float, the gradient a float64 vector laid out as
        :meth:`flat_weights` (what ``scipy.optimize.minimize(jac=True)``
        takes).  Leaves the weights at ``v``."""
        X, yt, sw = self._prepare(X, y, sample_weight)
        self.runtime.set_flat_weights(v)
        self._use_plan(X.shape[0], training=True)
        with self.runtime.session():
            loss, _ = self.runtime.loss_and_gradients(X, yt, sw)
            grad = self.runtime.flat_gradient()
        return loss, grad.astype(np.float64)

    @exclusive
    def population_loss(self, weights: ArrayLike, X: ArrayLike, y: ArrayLike,
                        sample_weight: ArrayLike | None = None) -> NDArray[np.float64]:
        """The loss on all of ``X`` of each row of ``weights`` ``(P,
        n_params)`` (flat weight vectors, :meth:`flat_weights` order):
        ``(P,)`` float64.  The model's weights are unchanged
        (:meth:`hetnet.runtime.Runtime.population_loss`)."""
        X, yt, sw = self._prepare(X, y, sample_weight)
        self._use_plan(X.shape[0], training=True)
        with self.runtime.session():
            return self.runtime.population_loss(weights, X, yt, sw)

    def count_params(self) -> int:
        """Number of trained parameters (state such as running statistics
        not counted, as PyTorch's ``parameters()``)."""
        self._require_built()
        return int(sum(np.prod(p.shape) for p in self._param_arrays()))

    # ------------------------------------------------------------ compute
    # ----------------------------------------------------------- placement
    @property
    def out_device(self) -> Device:
        """The device of the last step: where the loss and outputs live."""
        return self._steps[-1].device

    def _use_plan(self, batch, training, fixed_params=False):
        """Place every step as the plan for this batch size says."""
        fixed = None
        if fixed_params:   # a short last batch: parameters stay where training put them
            fixed = [s.device if s.params else None for s in self._steps]
        plan = self.placement.plan(self._chain(), batch, training, fixed)
        self.runtime.release_pool()
        self.runtime.place(plan.devices)
        return plan

    def _chain(self):
        """What the scheduler places (:class:`hetnet.sched.placement.Chain`)."""
        return Chain(self._steps, self.input_shape, self.n_outputs, self._measure_placement)

    def _measure_placement(self, devices, batch, training, repeats=3):
        self.runtime.place(devices)
        return self._measure_step(batch, training, repeats)

    def plan(self, batch_size: int, training: bool = True, refresh: bool = False) -> Placement:
        """The placement :meth:`fit` (``training``) or :meth:`predict` would
        use at ``batch_size``; see :meth:`explain` for predicted and measured
        times.

        Plans are made once per batch size and mode and then kept.  With
        ``refresh=True`` this one is made again: for ``"auto"``, the
        candidate placements are timed again on real steps (the host's load
        or speed may have changed since), and the next :meth:`fit` or
        :meth:`predict` at this size uses the new plan.  The cost tables are
        kept; :func:`hetnet.calibrate` re-measures those.
        """
        self._require_built()
        batch_size = check_positive_int("batch_size", batch_size)
        if not isinstance(refresh, (bool, np.bool_)):
            raise TypeError(f"refresh must be True or False, got {refresh!r}")
        if refresh:
            self.placement.forget(batch_size, training)
        plan = self.placement.plan(self._chain(), batch_size, training)
        self.runtime.release_pool()
        return plan

    @exclusive
    def explain(self, batch_size: int = 64, training: bool = True, repeats: int = 5
                ) -> Placement:
        """The plan at ``batch_size`` with predicted and measured times.

        Every step is timed (median of ``repeats``) on the device the plan
        gives it, on random data of the model's input shape, waiting for the
        device after each step; the whole step (the batch gathered from a
        shuffled dataset-sized array and uploaded, transfers, loss and, in
        training, the update by the model's optimizer) is timed again
        without those waits, as :meth:`fit` runs it (:meth:`_step_time`).
        The steps train copies of the parameters (:func:`hetnet.runtime.timing.training_on_copies`):
        no weight changes.  The host's speed is probed around the timings
        (:func:`hetnet.sched.hostspeed.probe`, ``Plan.explain_host_probe_s``); the
        table notes when it differs from the speed 'auto' planned at.
        Returns a :class:`hetnet.sched.planner.Plan`; ``print()`` it for the table.
        """
        self._require_built()
        batch_size = check_positive_int("batch_size", batch_size)
        repeats = check_positive_int("repeats", repeats)
        plan = self.placement.plan(self._chain(), batch_size, training, measure_costs=True)
        self._use_plan(batch_size, training)
        x, y = timing.random_batch(self.runtime, batch_size)
        per_step = [[] for _ in self._steps]
        probes = [probe()]      # the host's speed around the timings (hetnet.sched.hostspeed)
        with self.runtime.session(), timing.training_on_copies(self.runtime):
            for r in range(repeats + 1):
                times = timing.timed_step(self.runtime, x, y, np.arange(batch_size), training,
                                         per_step_sync=True)
                if r:   # the first round warms up
                    for i, t in enumerate(times):
                        per_step[i].append(t)
        for s, ts in zip(plan.steps, per_step):
            s.measured_s = float(np.median(ts))
        probes.append(probe())
        plan.measured_step_s = self._step_time(batch_size, training, windows=5)
        probes.append(probe())
        plan.explain_host_probe_s = float(np.median(probes))
        self.runtime.release_pool()
        try:
            _, why = self.fusion.decide(self, batch_size, training)
        except FusionUnsupported as exc:
            why = str(exc)
        plan.reason = "; ".join(r for r in (plan.reason, f"fusion: {why}") if r)
        return plan

    # timing, kept under the names the scheduler's tests and benchmarks use
    def _measure_step(self, batch, training, repeats=3, min_seconds=0.02):
        return self.runtime.measure_step(batch, training, repeats, min_seconds)

    def _step_time(self, batch, training, windows=3, repeats=3, min_seconds=0.02):
        return self.runtime.step_time(batch, training, windows, repeats, min_seconds)

    def _release_pool(self):
        self.runtime.release_pool()

    def _devices_in_use(self):
        return self.runtime.devices_in_use()

    def _forward(self, x, training, after_step=None):
        return self.runtime.forward(x, training, after_step)

    def _loss_op(self, logits, target, weights):
        return self.runtime.loss_op(logits, target, weights)

    def _batch_to_device(self, X, yt, sw, idx):
        return self.runtime.batch_to_device(X, yt, sw, idx)

    def _prepare(self, X, y, sample_weight=None, check_input=True):
        X = check_X(X, self.input_shape, check_finite=check_input)
        if not self.built:
            self.build(X.shape[1:])
        yt = check_targets(y, X.shape[0], self.loss.name, self.n_outputs)
        sw = check_sample_weight(sample_weight, X.shape[0])
        return X, yt, sw

    def train_step(self, xb: Any, yb: Any, wb: Any = None) -> Any:
        """One forward/backward/update on device arrays; returns the device loss."""
        return self.runtime.train_step(xb, yb, wb)

    def add_gradient_hook(self, fn: Callable[..., Any]) -> Any:
        """Call ``fn(grads)`` between backward and update of every training
        step (:meth:`hetnet.runtime.Runtime.add_gradient_hook`)."""
        self._require_built()
        return self.runtime.add_gradient_hook(fn)

    @exclusive
    def fit(self, X: ArrayLike, y: ArrayLike, epochs: int | None = None, batch_size: int = 32,
            optimizer: str | Optimizer | Metaheuristic | None = None,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None, verbose: int = 0,
            shuffle: bool = True, sample_weight: ArrayLike | None = None,
            callbacks: Sequence[Callback] | None = None,
            lr_schedule: str | Schedule | Callable[[int, int], float] | None = None,
            check_input: bool = True, distributed: bool | Context = False,
            max_evals: int | None = None,
            resume_from: str | os.PathLike[str] | None = None) -> History:
        if isinstance(optimizer, Metaheuristic):
            if lr_schedule is not None:
                raise ValueError("lr_schedule applies to gradient optimizers; a metaheuristic "
                                 "has no learning rate (give its gd optimizer a fixed one)")
            return _evolve.evolve(self, X, y, optimizer, max_evals, epochs, batch_size,
                                  validation_data, verbose, shuffle, sample_weight, callbacks,
                                  check_input, distributed, resume_from)
        if max_evals is not None:
            raise ValueError(f"max_evals={max_evals!r} applies to a metaheuristic optimizer "
                             f"(hn.SHADE, hn.SHADEILS); for {optimizer!r} give epochs=")
        return _fit.fit(self, X, y, 1 if epochs is None else epochs, batch_size, optimizer,
                        validation_data, verbose, shuffle, sample_weight, callbacks,
                        lr_schedule, check_input, distributed, resume_from)

    fit.__doc__ = _fit.fit.__doc__ + """
    With ``optimizer`` a metaheuristic (``hn.SHADE``, ``hn.SHADEILS``),
    ``max_evals`` (required) bounds the loss evaluations and ``epochs``
    (default 20) splits them into records: :func:`hetnet.model.evolve.evolve`.
    Otherwise ``epochs`` defaults to 1 and ``max_evals`` must be None.
"""

    # ---------------------------------------------------------- inference
    def _inference_batches(self, X, batch_size, *arrays):
        """Plan for inference at this batch size, then yield ``(slice, batch
        on the input device)``; a short last batch is re-planned with the
        parameters left where they are."""
        batch_size = check_positive_int("batch_size", batch_size)
        n = X.shape[0]
        self._use_plan(min(batch_size, n), training=False)
        with self.runtime.session():
            for start in range(0, n, batch_size):
                idx = slice(start, start + batch_size)
                if start and n - start < batch_size:
                    self._use_plan(n - start, training=False, fixed_params=True)
                yield idx, self.runtime.gather_inputs(X, idx)

    def _fused_inference(self, X, batch_size):
        """The fused trainer for inference on ``X`` when the fusion policy
        picks it at this batch size, else None."""
        batch_size = check_positive_int("batch_size", batch_size)
        n = X.shape[0]
        if n == 0:
            return None
        batch = min(batch_size, n)
        use, _ = self.fusion.decide(self, batch, False, _fit.fused_unsupported(None, None),
                                    X.nbytes)
        return self.fusion.trainer(self, batch, training=False) if use else None

    def _split_over_ranks(self, X, distributed, predict):
        """``predict(X)`` with the rows of ``X`` split over the ranks of a
        data-parallel job and the results gathered in order on every rank
        (``distributed``: as :meth:`fit`'s); a plain call without it."""
        ctx = _fit.distributed_context(distributed, self.placement.primary)
        if ctx is None:
            return predict(X)
        from ..distributed.data_parallel import rank_block, gather_rows
        mine = X[rank_block(X.shape[0], ctx)]
        # a rank without rows still gathers: an empty result of the right shape
        local = predict(mine) if mine.shape[0] else predict(X[:1])[:0]
        return gather_rows(ctx, local)

    @exclusive
    def predict_logits(self, X: ArrayLike, batch_size: int = 256,
                       distributed: bool | Context = False) -> NDArray[np.float32]:
        """Raw outputs of the last layer, ``(n, k)`` numpy.  ``distributed``
        (as :meth:`fit`'s): every rank predicts its block of the rows and
        all get all of them."""
        self._require_built()
        X = check_X(X, self.input_shape)
        if distributed:
            return self._split_over_ranks(X, distributed,
                                          lambda part: self.predict_logits(part, batch_size))
        fused = self._fused_inference(X, batch_size)
        if fused is not None:
            return fused.predict_logits(X)
        out = np.empty((X.shape[0], self.n_outputs), dtype=np.float32)
        for idx, xb in self._inference_batches(X, batch_size):
            out[idx] = self.out_device.to_host(self._forward(xb, False))
        return out

    @exclusive
    def predict_proba(self, X: ArrayLike, batch_size: int = 256,
                      distributed: bool | Context = False) -> NDArray[np.float32]:
        """Class probabilities (softmax for cross-entropy, sigmoid for binary
        cross-entropy), ``(n, k)``.  ``distributed``: as :meth:`predict_logits`."""
        if not self.loss.classification:
            raise AttributeError("predict_proba needs a classification loss; this model uses "
                                 f"{self.loss.name!r}")
        self._require_built()
        X = check_X(X, self.input_shape)
        if distributed:
            return self._split_over_ranks(X, distributed,
                                          lambda part: self.predict_proba(part, batch_size))
        if self.loss.name == "cross_entropy":
            fused = self._fused_inference(X, batch_size)
            if fused is not None:
                z = fused.predict_logits(X).astype(np.float64)
                e = np.exp(z - z.max(axis=1, keepdims=True))
                return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        out = np.empty((X.shape[0], self.n_outputs), dtype=np.float32)
        for idx, xb in self._inference_batches(X, batch_size):
            logits = self._forward(xb, False)
            dev = self.out_device
            out[idx] = dev.to_host(dev.activation(self.loss.output, logits))
        return out

    @exclusive
    def predict(self, X: ArrayLike, batch_size: int = 256,
                distributed: bool | Context = False) -> NDArray[Any]:
        """Class indices (cross-entropy), 0/1 per output (binary cross-entropy)
        or the outputs themselves (MSE; 1-D when there is one output).
        ``distributed``: as :meth:`predict_logits`."""
        if distributed:
            self._require_built()
            return self._split_over_ranks(check_X(X, self.input_shape), distributed,
                                          lambda part: self.predict(part, batch_size))
        if self.loss.name == "cross_entropy":
            self._require_built()
            X = check_X(X, self.input_shape)
            fused = self._fused_inference(X, batch_size)
            if fused is not None:
                return fused.predict_logits(X).argmax(axis=1).astype(np.int64)
            out = np.empty(X.shape[0], dtype=np.int64)
            for idx, xb in self._inference_batches(X, batch_size):
                logits = self._forward(xb, False)
                dev = self.out_device
                out[idx] = dev.to_host(dev.argmax(logits))
            return out
        if self.loss.name == "binary_cross_entropy":
            pred = (self.predict_proba(X, batch_size) > 0.5).astype(np.int64)
        else:
            pred = self.predict_logits(X, batch_size)
        return pred[:, 0] if pred.shape[1] == 1 else pred

    @exclusive
    def evaluate(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                 batch_size: int = 256, metrics: Sequence[str] | None = None,
                 distributed: bool | Context = False) -> dict[str, Any]:
        """Mean loss (and accuracy for classification) over a data set:
        ``{"loss": float, "accuracy": float}``; with ``metrics`` (names from
        :data:`hetnet.metrics.METRICS`: ``"accuracy"``, ``"balanced_accuracy"``,
        ``"r2"``, ``"mae"``, ``"mse"``) the loss and those, as scikit-learn
        computes them from the predictions.  ``distributed`` (as
        :meth:`fit`'s): every rank evaluates its block of the rows, the loss
        sums are added over the ranks (and for ``metrics`` the outputs
        gathered); every rank gets the result."""
        self._require_built()
        X, yt, sw = self._prepare(X, y, sample_weight)
        if metrics is not None:
            metrics = check_metrics(metrics, self.loss.classification)
        return self._evaluate(X, yt, sw, batch_size, metrics, distributed)

    def _evaluate(self, X, yt, sw, batch_size=256, metrics=None, distributed=False):
        """The loss and accuracy over validated data; with ``metrics`` (checked
        names) the loss and those metrics instead, from the logits."""
        ctx = _fit.distributed_context(distributed, self.placement.primary)
        if ctx is not None:
            from ..distributed.data_parallel import rank_block, evaluate_sums
            block = rank_block(X.shape[0], ctx)
            n_mine = block.stop - block.start
            if n_mine:
                local = self._evaluate(X[block], yt[block], None if sw is None else sw[block],
                                       batch_size)
            else:
                local = {"loss": 0.0, **({"accuracy": 0.0} if self.loss.classification else {})}
            result = evaluate_sums(ctx, {**local, "n": n_mine})
            if metrics is not None:     # not sums over rows: from every rank's outputs
                logits = self._split_over_ranks(
                    X, ctx, lambda part: self.predict_logits(part, batch_size))
                result = {"loss": result["loss"],
                          **score(metrics, self.loss.name, yt, logits, sw)}
            return result
        n = X.shape[0]
        if sw is None and metrics is None and self.loss.name == "cross_entropy":
            fused = self._fused_inference(X, batch_size)
            if fused is not None:
                return fused.evaluate(X, yt)
        total, correct = 0.0, 0
        logits_all = None if metrics is None else np.empty((n, self.n_outputs), np.float32)
        for idx, xb in self._inference_batches(X, batch_size):
            dev = self.out_device
            yb, wb = self.runtime.targets_to_device(yt, sw, idx)
            logits = self._forward(xb, False)
            loss, _ = self._loss_op(logits, yb, wb)
            total += float(dev.to_host(loss)[0]) * xb.shape[0]
            if logits_all is not None:
                logits_all[idx] = dev.to_host(logits)
            elif self.loss.name == "cross_entropy":
                correct += int((dev.to_host(dev.argmax(logits)) == yt[idx]).sum())
            elif self.loss.name == "binary_cross_entropy":
                pred = dev.to_host(logits) > 0
                correct += int((pred == (yt[idx] > 0.5)).all(axis=1).sum())
        result = {"loss": total / n}
        if metrics is not None:
            result.update(score(metrics, self.loss.name, yt, logits_all, sw))
        elif self.loss.classification:
            result["accuracy"] = correct / n
        return result

    @exclusive
    def loss_and_gradients(self, X: ArrayLike, y: ArrayLike,
                           sample_weight: ArrayLike | None = None, training: bool = True
                           ) -> tuple[float, list[NDArray[np.float32]]]:
        """Loss of one batch holding all of ``X`` and the gradient of every
        trained parameter, numpy, in the order of the model's parameters
        (:meth:`get_weights` without the state).  Changes no weight; in
        training mode (the default, as :meth:`fit` steps) BatchNorm uses the
        batch's statistics and updates its running ones, Dropout drops; with
        ``training=False`` the layers run as in :meth:`predict`."""
        X, yt, sw = self._prepare(X, y, sample_weight)
        self._use_plan(X.shape[0], training=bool(training))
        with self.runtime.session():
            return self.runtime.loss_and_gradients(X, yt, sw, training=bool(training))

    @exclusive
    def lr_find(self, X: ArrayLike, y: ArrayLike, **kwargs: Any) -> LRFindResult:
        """The learning-rate range test (:func:`hetnet.model.lrfind.lr_find`)."""
        from .lrfind import lr_find
        return lr_find(self, X, y, **kwargs)

    # ------------------------------------------------------------- report
    def summary(self) -> str:
        """A text table of layers, output shapes and parameter counts."""
        self._require_built()
        width = 64      # wide enough for a convolution's kernel size and stride
        where = ", ".join(d.name for d in self._devices_in_use())
        lines = [f"Sequential on {where} (policy {self.placement.policy}), input "
                 f"{self.input_shape}, loss {self.loss.name}",
                 f"{'layer':<{width}}{'output':<18}{'params':>10}"]
        def rows(layers, depth):
            # a block's sub-layers follow it, indented (Residual.sublayers)
            for layer in layers:
                yield depth, layer
                yield from rows(getattr(layer, "sublayers", ()), depth + 1)
        for depth, layer in rows(self.layers, 0):
            n = int(sum(np.prod(p.shape) for p in layer.params.values()))
            note = ""
            if layer.fusable_activations and layer.activation != "identity":
                note = f" (+{layer.activation}, fused)"
            name = "  " * depth + getattr(layer, "summary_name", repr(layer))
            lines.append(f"{(name + note)[:width - 1]:<{width}}{str(layer.output_shape):<18}"
                         f"{n:>10}")
        lines.append(f"total parameters: {self.count_params()}")
        return "\n".join(lines)

    def get_config(self) -> dict[str, Any]:
        return {"loss": self.loss.name, "seed": self.seed,
                "input_shape": list(self.input_shape) if self.built else None,
                "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write the model with where :meth:`fit` stands (optimizer state,
        epoch, step, shuffling state, history) to ``path``, atomically;
        ``fit(..., resume_from=path)`` continues from it
        (:mod:`hetnet.model.checkpoint`).  Called from a callback's
        ``on_epoch_end`` (as :class:`hetnet.callbacks.ModelCheckpoint` does);
        in a metaheuristic fit the file also holds the search's state."""
        progress = self.__dict__.get("_fit_progress")
        if progress is None:
            raise RuntimeError("save_checkpoint needs a fit in progress (call it from a "
                               "callback's on_epoch_end); save() writes the model alone")
        from .checkpoint import save_checkpoint
        return save_checkpoint(self, path, progress, self.history or {})

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the architecture (JSON) and weights (arrays) to ``path`` (.npz).
        Nothing in the file is executable; :func:`hetnet.load` reads it back."""
        io.save_model(self, path)


def _layer_tree(layers):
    for layer in layers:
        yield layer
        yield from _layer_tree(getattr(layer, "sublayers", ()))


_owners = weakref.WeakKeyDictionary()    # layer -> weak reference to its model


def _claim(layers, model):
    """Mark ``layers`` as ``model``'s; a layer of another live model that
    has been built is refused (building it here would re-initialise that
    model's trained weights in place).  The mark lives outside the layer,
    so a ``copy.deepcopy`` of a layer is free."""
    for layer in _layer_tree(layers):
        ref = _owners.get(layer)
        owner = ref() if ref is not None else None
        if owner is not None and owner is not model and owner.built:
            raise ValueError(
                f"layer {layer!r} already belongs to a built model; a layer object serves one "
                "model: create new layers, or copy.deepcopy(layer) for an independent copy "
                "(with its weights)")
    for layer in _layer_tree(layers):
        _owners[layer] = weakref.ref(model)


def load(path: str | os.PathLike[str], device: str | Device = "cpu") -> Sequential:
    """Read a model written by :meth:`Sequential.save` onto ``device``.

    The file is read with ``allow_pickle=False`` (:mod:`hetnet.model.io`):
    an object array (a pickle payload) is refused, never executed.
    """
    path = os.fspath(path)
    data = io.open_npz(path, "model")
    with data:
        config = io.read_config(data, path)
        layers = io.layers_from_config(config, path)
        # the declared sizes against the stored arrays, before building allocates them
        stored = sum(int(np.prod(s)) for s in io.stored_weight_shapes(data, path).values())
        declared = io.declared_size(layers)
        if declared > stored:
            raise ValueError(f"{path!r}: the layers declare {declared} parameters, the file "
                             f"stores {stored} values")
        try:
            model = Sequential(layers, loss=config["loss"], device=device,
                               seed=config.get("seed"), input_shape=config["input_shape"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path!r}: the layers do not fit together: {exc}") from None
        weights = io.read_weights(data, path, sum(layer.n_weights for layer in model.layers))
    try:
        model.set_weights(weights)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path!r}: {exc}") from None
    return model


__all__ = ["Sequential", "History", "load"]
