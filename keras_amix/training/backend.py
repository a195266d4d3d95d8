"""The backend-specific pieces models need, in one place.

Models and layers are written in `keras.ops`; what Keras does not expose
for every backend lives here, each branch marked with the backend it is for:

- `num_replicas()`: the replica count of the current `tf.distribute`
  strategy (TensorFlow only; 1 elsewhere: JAX's `keras.distribution` shards
  one global program, so every op already sees the global batch).
- `all_gather(x)`: `x` concatenated over the replicas of a `tf.distribute`
  strategy (TensorFlow only; identity elsewhere, for the same reason).
- `input_gradient(fn, x)`: the gradient of a scalar with respect to an input
  tensor inside a training step (PuzzleMix / Co-Mixup saliency), on
  TensorFlow, JAX and torch.

The other backend-specific code of the package is the TensorBoard image
writer (`training/callbacks.py`, TensorFlow's `tf.summary`), the graph-mode
value checks of `mixers/checks.py`, the tf.data pipelines (`data/`) and the
SavedModel export (`export.py`). The training step is Keras' own
(`training/step.py`).
"""

import keras

_BACKEND = keras.backend.backend()


def num_replicas():
    """Replicas of the current `tf.distribute` strategy; 1 on other backends."""
    if _BACKEND != "tensorflow":
        return 1
    import tensorflow as tf  # TensorFlow only

    return tf.distribute.get_strategy().num_replicas_in_sync


def all_gather(x):
    """Concatenates `x` over the replicas of a `tf.distribute` strategy, else identity."""
    if _BACKEND != "tensorflow":
        return x
    import tensorflow as tf  # TensorFlow only: the replica context of MirroredStrategy

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return x
    return ctx.all_gather(x, axis=0)


def input_gradient(fn, x):
    """Gradient of the scalar `fn(x)` with respect to the tensor `x`.

    Runs on every backend inside a training step (PuzzleMix and Co-Mixup use
    it for the saliency |dL/dx|). The result carries no gradient itself.
    """
    if _BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return tf.stop_gradient(tape.gradient(value, x))
    if _BACKEND == "jax":
        import jax

        return jax.lax.stop_gradient(jax.grad(lambda t: fn(t))(x))
    if _BACKEND == "torch":
        import torch

        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            value = fn(x)
            (grad,) = torch.autograd.grad(value, x)
        return grad.detach()
    raise NotImplementedError(f"input_gradient does not support backend {_BACKEND!r}.")
