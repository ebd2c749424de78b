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


def layer_forward(layer, params, x):
    """Float64 forward of a built hetnet layer with ``params`` (dict of arrays)."""
    name = type(layer).__name__
    act = ACT[getattr(layer, "activation", "identity")]
    if name == "Dense":
        return act(x @ params["W"] + (params["b"] if "b" in params else 0))
    if name == "Conv2D":
        return act(conv2d(x, params["W"], params.get("b"), layer.stride, layer.pad))
    if name == "MaxPool2D":
        return maxpool2d(x, layer.size, layer.stride)
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
