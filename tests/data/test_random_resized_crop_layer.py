"""RandomResizedCrop as a Keras layer on the active backend (not only TF)."""

import keras
import numpy as np
import tensorflow as tf

from keras_amix import data as kd


def test_layer_runs_on_backend_and_in_tf_data():
    images = np.random.default_rng(0).random((2, 12, 10, 3)).astype("float32")
    out = kd.RandomResizedCrop(6, 5, seed=3)(images)
    again = kd.RandomResizedCrop(6, 5, seed=3)(images)
    assert tuple(out.shape) == (2, 6, 5, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(again))
    ds = tf.data.Dataset.from_tensors(images).map(kd.RandomResizedCrop(6, 5, seed=3))
    assert isinstance(next(iter(ds)), tf.Tensor)
