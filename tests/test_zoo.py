"""The model zoo: the thesis's models (tables 2-4, its MLP list) and LeNet-5's old default."""

import numpy as np
import pytest

import hetnet as hn
from hetnet import models


# ----------------------------------------------------------- parameter counts
@pytest.mark.parametrize("hidden, count", [(1, 2238), (2, 6462), (5, 85310), (11, 1403838)])
def test_thesis_mlp_parameter_counts(hidden, count):
    # the thesis's counts (section 6.1) for 30 inputs and 2 outputs
    model = models.thesis_mlp(hidden, 30, 2)
    assert model.count_params() == count
    # BatchNorm's running statistics are state, not parameters (PyTorch's convention)
    n_state = sum(w.size for w in model.get_weights()) - count
    n_bn = sum(layer.num_features for layer in model.layers if isinstance(layer, hn.BatchNorm1D))
    assert n_state == 2 * n_bn


def test_thesis_mlp_layout():
    model = models.thesis_mlp(2, 30, 2)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["BatchNorm1D", "Dense", "ReLU", "BatchNorm1D", "Dense", "ReLU",
                     "BatchNorm1D", "Dense"]
    dense = [layer for layer in model.layers if isinstance(layer, hn.Dense)]
    assert [d.bias for d in dense] == [False, False, True]
    assert [d.out_features for d in dense] == [64, 64, 2]
    widths = [d.out_features for d in models.thesis_mlp(11, 30, 2).layers
              if isinstance(d, hn.Dense)]
    assert widths == [32, 64, 128, 256, 512, 1024, 512, 256, 128, 64, 32, 2]


def _torch_style_resnet_count(blocks, in_channels=1, num_classes=10):
    """The parameters of the thesis's PyTorch ResNet (code/utilstfg.py of its
    repository), counted from its definition: conv weights without bias,
    BatchNorm weight and bias, one Linear."""
    def bn(c):
        return 2 * c

    def bottleneck(cin, cout, stride):
        mid = cout // 4
        n = cin * mid + bn(mid) + mid * mid * 9 + bn(mid) + mid * cout + bn(cout)
        if stride != 1 or cin != cout:
            n += cin * cout + bn(cout)
        return n
    total = in_channels * 64 * 49 + bn(64)
    cin = 64
    for stage, (width, k) in enumerate(zip((64, 128, 256, 512), blocks)):
        for b in range(k):
            total += bottleneck(cin, width, 2 if stage and not b else 1)
            cin = width
    return total + bn(512) + 512 * num_classes + num_classes


@pytest.mark.parametrize("build, blocks", [(models.resnet15, (1, 1, 1, 1)),
                                           (models.resnet57, (3, 4, 4, 3))])
def test_resnet_parameter_counts(build, blocks):
    assert build().count_params() == _torch_style_resnet_count(blocks)


def test_resnet57_is_the_thesis_size():
    # "1.3M parameters" (section 6.1)
    assert models.resnet57().count_params() == 1346826


def test_lenet5_thesis_table2():
    model = models.lenet5(batch_norm=True, input_size=32)
    assert model.count_params() == 62158           # "62 mil parámetros"
    shapes = [layer.output_shape for layer in model.layers]
    assert shapes[:8] == [(6, 28, 28)] * 3 + [(6, 14, 14)] + [(16, 10, 10)] * 3 + [(16, 5, 5)]
    assert [type(layer).__name__ for layer in model.layers].count("BatchNorm1D") == 2


def test_resnet_table3_shapes():
    model = models.resnet15()
    blocks = [layer.output_shape for layer in model.layers if isinstance(layer, hn.Residual)]
    assert model.layers[0].output_shape == (64, 26, 26)
    assert model.layers[3].output_shape == (64, 13, 13)
    assert blocks == [(64, 13, 13), (128, 7, 7), (256, 4, 4), (512, 2, 2)]
    shortcuts = [layer.shortcut is not None for layer in model.layers
                 if isinstance(layer, hn.Residual)]
    assert shortcuts == [False, True, True, True]


def test_lenet5_default_unchanged():
    # today's default: the 28x28 LeNet-5 with padding 2, He init, no BatchNorm
    old = hn.Sequential([hn.Conv2D(1, 6, kernel_size=5, padding=2), hn.ReLU(), hn.MaxPool2D(2),
                         hn.Conv2D(6, 16, kernel_size=5), hn.ReLU(), hn.MaxPool2D(2),
                         hn.Flatten(), hn.Dense(400, 120), hn.ReLU(), hn.Dense(120, 84),
                         hn.ReLU(), hn.Dense(84, 10)], seed=7, device="cpu")
    old.build((1, 28, 28))
    new = models.lenet5(seed=7, device="cpu")
    assert new.built and new.input_shape == (1, 28, 28)
    assert [repr(a) for a in old.layers] == [repr(b) for b in new.layers]
    for a, b in zip(old.get_weights(), new.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b)


# --------------------------------------------------------- forward and a step
ZOO = [
    ("mlp-1", lambda: models.thesis_mlp(1, 7, 3, seed=0, device="cpu"), (7,), 3),
    ("mlp-11", lambda: models.thesis_mlp(11, 5, 1, loss="mse", seed=0, device="cpu"), (5,), 1),
    ("lenet5", lambda: models.lenet5(seed=0, device="cpu"), (1, 28, 28), 10),
    ("lenet5-bn", lambda: models.lenet5(batch_norm=True, input_size=32, seed=0, device="cpu"),
     (1, 32, 32), 10),
    ("resnet15", lambda: models.resnet15(num_classes=4, seed=0, device="cpu"), (1, 32, 32), 4),
    ("resnet57", lambda: models.resnet57(in_channels=3, seed=0, device="cpu"), (3, 32, 32), 10),
]


@pytest.mark.parametrize("name, build, shape, k", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_forward_and_one_step(name, build, shape, k):
    model = build()
    assert model.built and model.input_shape == shape and model.n_outputs == k
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4,) + shape).astype(np.float32)
    out = model.predict_logits(X)
    assert out.shape == (4, k) and np.isfinite(out).all()
    y = (rng.standard_normal(4).astype(np.float32) if model.loss.name == "mse"
         else rng.integers(0, k, 4))
    before = model.get_weights()
    history = model.fit(X, y, epochs=1, batch_size=4, optimizer=hn.Adam(lr=1e-3))
    assert np.isfinite(history["loss"][0])
    after = model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert np.isfinite(model.predict_logits(X)).all()


# -------------------------------------------------------------------- summary
def test_summary_before_fit_lists_the_layers_inside_blocks():
    model = models.resnet15()
    lines = model.summary().splitlines()
    assert lines[-1] == "total parameters: 513034"
    inner = [ln for ln in lines[2:-1] if ln.startswith("  ")]
    assert len(inner) == 4 * 8 + 3 * 2          # branches, then the three projections
    assert sum(ln.lstrip().startswith("Conv2D") for ln in inner) == 12 + 3
    assert "kernel_size=(3, 3)" in "\n".join(inner)
    # every top-level layer has its row
    top = [ln for ln in lines[2:-1] if not ln.startswith("  ")]
    assert len(top) == len(model.layers)
    # the block's row counts its sub-layers' parameters
    first_block = next(ln for ln in lines if ln.startswith("Residual"))
    assert first_block.split()[-1] == "4544"


def test_summary_of_mlp():
    text = models.thesis_mlp(1, 30, 2).summary()
    assert "BatchNorm1D" in text and text.endswith("total parameters: 2238")


# --------------------------------------------------------------- bad arguments
def test_zoo_bad_arguments():
    with pytest.raises(ValueError, match="hidden must be one of .*got 3"):
        models.thesis_mlp(3, 30, 2)
    with pytest.raises(ValueError, match="n_inputs must be a positive int"):
        models.thesis_mlp(1, 0, 2)
    with pytest.raises(ValueError, match="input_size >= 16"):
        models.lenet5(input_size=8)
    with pytest.raises(ValueError, match="num_classes"):
        models.resnet15(num_classes=0)
    with pytest.raises(ValueError, match="4 stages"):
        models.resnet_layers((1, 1, 1))
    with pytest.raises(TypeError):
        models.lenet5(1, 10, 32)      # batch_norm and input_size are keyword-only
