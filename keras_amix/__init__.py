"""keras-amix: learnable mixup (AMix / SAMix, AutoMix) for Keras 3.

Subpackages: `backbones`, `layers` (MixBlock), `losses`, `mixers`, `models`,
`training`; `data` (tf.data pipelines) and `export` (SavedModel) import
TensorFlow and load on first access.
"""

import importlib

from keras_amix import backbones, layers, losses, mixers, models, training

__version__ = "0.2.0"

_LAZY = ("data", "export")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"keras_amix.{name}")
    raise AttributeError(f"module 'keras_amix' has no attribute {name!r}")
