"""The layer classes by name, used to rebuild saved models (and saved
Residual blocks) without executing anything; :mod:`hetnet.layers` fills it."""

#: class name -> class
LAYERS = {}
