"""Float64 numpy forward passes of every layer, independent of any device.

Used as the function whose central finite differences the analytic
gradients are checked against.
"""

import numpy as np

ACT = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
}


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def conv2d(x, W, b, stride, pad):
    n, c, h, w = x.shape
    f, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, f, ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw]       # (n, c, ho, wo)
            out += np.einsum("nchw,fc->nfhw", patch, W[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def maxpool2d(x, size, stride):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = size, stride
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.full((n, c, ho, wo), -np.inf)
    for i in range(kh):
        for j in range(kw):
            out = np.maximum(out, x[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw])
    return out


def pool2d(x, size, stride, padding, how):
    """Max (-inf padding) or average (zero padding counted) pooling."""
    (kh, kw), (sh, sw), (ph, pw) = size, stride, padding
    fill = -np.inf if how == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.full((n, c, ho, wo), -np.inf) if how == "max" else np.zeros((n, c, ho, wo))
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw]
            out = np.maximum(out, win) if how == "max" else out + win / (kh * kw)
    return out


def batchnorm(x, gamma, beta, eps, training, running_mean=None, running_var=None):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mu, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mu, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    return ((x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape)
            + beta.reshape(shape))


def dropout_mask(layer, shape):
    """The mask (times 1/(1-p)) of the dropout layer's last training pass,
    from the numpy reference device's counter-based hash."""
    from hetnet.devices.reference import NumpyDevice
    return NumpyDevice().dropout(np.ones(shape, np.float32), layer.p, layer._key).astype(np.float64)


def _sub_params(params, prefix):
    head = prefix + "."
    return {k[len(head):]: v for k, v in params.items() if k.startswith(head)}


def layer_forward(layer, params, x, training=True):
    """Float64 forward of a built hetnet layer with ``params`` (dict of
    arrays), in training or inference mode (running statistics and dropout
    keys are read from the layer)."""
    name = type(layer).__name__
    act = ACT[getattr(layer, "activation", "identity")]
    if name == "Dense":
        return act(x @ params["W"] + (params["b"] if "b" in params else 0))
    if name == "Conv2D":
        return act(conv2d(x, params["W"], params.get("b"), layer.stride, layer.pad))
    if name == "MaxPool2D":
        return pool2d(x, layer.size, layer.stride, getattr(layer, "padding", (0, 0)), "max")
    if name == "AvgPool2D":
        return pool2d(x, layer.size, layer.stride, layer.padding, "avg")
    if name == "GlobalAvgPool2D":
        return x.mean(axis=(2, 3))
    if name in ("BatchNorm1D", "BatchNorm2D"):
        dev = layer.device
        rm, rv = (dev.to_host(layer.state[k]) for k in ("running_mean", "running_var"))
        return act(batchnorm(x, params["gamma"], params["beta"], layer.eps, training, rm, rv))
    if name == "Dropout":
        if not training or layer.p == 0:
            return x
        return x * dropout_mask(layer, x.shape)
    if name == "Residual":
        h = x
        for i, sub in enumerate(layer.branch):
            if sub in layer._branch_steps:
                h = layer_forward(sub, _sub_params(params, f"b{i}"), h, training)
        s = x
        for i, sub in enumerate(layer.shortcut or []):
            if sub in layer._shortcut_steps:
                s = layer_forward(sub, _sub_params(params, f"s{i}"), s, training)
        return act(h + s)
    if name == "Flatten":
        return x.reshape(x.shape[0], -1)
    if name == "Softmax":
        return softmax(x)
    return ACT[layer.kind](x)


def cross_entropy(z, labels):
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return (lse - z[np.arange(len(labels)), labels]).mean()


def numeric_grad(f, a, eps=1e-5):
    """Central differences of scalar f() w.r.t. every entry of float64 array a (in place)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g
