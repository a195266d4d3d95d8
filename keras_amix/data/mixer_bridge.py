"""A mixer inside `tf.data` on the JAX and torch backends.

On the TensorFlow backend a mixer's `keras.ops` code runs inside
`tf.data.Dataset.map` as it is. On JAX and torch those ops cannot take the
graph tensors of a `tf.data` map, so `Mixer` hands such a batch here:
`tf.numpy_function` runs the mixer eagerly on the active backend, on the
batch as NumPy arrays, and gives back TensorFlow tensors with the static
shapes and dtypes the mixer's contract promises (images as they came; labels
float, one-hot for integer labels).

Keras' own `MixUp` / `CutMix` do the same job by switching their ops to
TensorFlow inside `tf.data` (their private `DataLayer` base); keras-amix's
mixers share one `keras.ops` code path with the training step instead, so the
bridge uses only public TensorFlow and Keras API.

Each call advances the mixer's `SeedGenerator` on the host, in the order
`tf.data` calls it: map without `num_parallel_calls` (the default) for
reproducible draws. Model-dependent inputs (PuzzleMix's `saliency=`) are not
available in an input pipeline and are refused.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def is_graph_tensor(value):
    """True for a symbolic TensorFlow tensor (inside `tf.data.Dataset.map` or a `tf.function`)."""
    return isinstance(value, tf.Tensor) and tf.is_symbolic_tensor(value)


def mix_in_graph(mixer, images, labels=None, training=True, **extra):
    """`mixer._mix(images, labels, training)` inside a TensorFlow graph, run
    eagerly on the active (non-TensorFlow) backend through `tf.numpy_function`."""
    if extra:
        raise ValueError(
            f"{type(mixer).__name__} inside tf.data on the {keras.backend.backend()} backend "
            f"takes images and labels only; received {sorted(extra)} (model inputs such as "
            "saliency are computed in the training step: use the mixer there, e.g. "
            "keras_amix.models.MixupClassifier(mixer=...))."
        )
    images = tf.convert_to_tensor(images)
    if labels is None:
        mixed = tf.numpy_function(
            lambda x: _numpy(mixer._mix(x, None, training)[0]), [images], images.dtype,
            stateful=True)
        mixed.set_shape(images.shape)
        return mixed, None
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        label_dtype, label_shape = labels.dtype, labels.shape
    else:  # integer ids come back one-hot
        label_dtype = tf.float32
        label_shape = tf.TensorShape([labels.shape[0] if labels.shape.rank else None,
                                      mixer.num_classes])

    def run(x, y):
        mixed_x, mixed_y = mixer._mix(x, y, training)
        return _numpy(mixed_x), _numpy(mixed_y).astype(label_dtype.as_numpy_dtype)

    mixed, mixed_labels = tf.numpy_function(run, [images, labels], [images.dtype, label_dtype],
                                            stateful=True)
    mixed.set_shape(images.shape)
    mixed_labels.set_shape(label_shape)
    return mixed, mixed_labels


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(value))
