"""hetnet's optimisers against torch.optim, step for step (optional: skipped
without PyTorch)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import hetnet as hn  # noqa: E402
from hetnet.devices.cpu import CPUDevice  # noqa: E402

from conftest import assert_close  # noqa: E402

CASES = {
    "nag": (lambda: hn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                       weight_decay=1e-3)),
    "rmsprop": (lambda: hn.RMSProp(0.01, alpha=0.9, weight_decay=1e-3),
                lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8,
                                               weight_decay=1e-3)),
    "rmsprop_momentum": (lambda: hn.RMSProp(0.01, momentum=0.9),
                         lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99, eps=1e-8,
                                                        momentum=0.9)),
    "adam": (lambda: hn.Adam(0.01, weight_decay=1e-2),
             lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=1e-2)),
    "adamw": (lambda: hn.AdamW(0.01, weight_decay=0.1),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1)),
}


@pytest.mark.parametrize("clip", [None, 0.3])
@pytest.mark.parametrize("name", list(CASES))
def test_trajectory_matches_torch(name, clip):
    rng = np.random.default_rng(0)
    shapes = [(5, 4), (4,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(6)]
    make_ours, make_theirs = CASES[name]
    dev = CPUDevice(num_threads=1)
    ours, held = make_ours(), [dev.asarray(p) for p in init]
    ours.clip_norm = clip
    tp = [torch.nn.Parameter(torch.tensor(p)) for p in init]
    theirs = make_theirs(tp)
    for gs in grads:
        ours.step(dev, held, [dev.asarray(g) for g in gs])
        for p, g in zip(tp, gs):
            p.grad = torch.tensor(g)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(tp, clip)
        theirs.step()
    for a, p in zip(held, tp):
        assert_close(a, p.detach().numpy(), rtol=1e-5, what=name)
