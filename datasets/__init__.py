"""Installed as ``hetnet._datasets``: the Fashion-MNIST sample shipped with hetnet
(``fashion-mnist-sample/``) and its manifest, so that the offline default works after a
non-editable install too.  See README.md here for sources and licences."""
