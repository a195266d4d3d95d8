"""Value checks that raise eagerly and still fire inside compiled functions.

Shape and dtype checks are static and raise `ValueError` at trace time. A check
on *values* (label ranges, row sums) cannot: inside `tf.function`,
`tf.data.Dataset.map` or `jax.jit` the values are not known while tracing.
`raise_if` is the one place that knows how each backend surfaces such an error:

- concrete values (eager TensorFlow, torch, JAX outside `jit`, numpy): the
  scalar flag is read and a `ValueError` is raised at once;
- TensorFlow graphs (`tf.function`, `tf.data`): a `tf.debugging.Assert`
  guards the returned tensor, so running the graph raises
  `tf.errors.InvalidArgumentError` carrying the message. XLA
  (`jit_compile=True`) drops Assert ops (TF logs "Ignoring Assert operator"):
  under XLA the check is off;
- JAX tracers (`jax.jit`, Keras' compiled steps): `jax.lax.cond` runs a
  `jax.debug.callback` that raises `ValueError` only when the flag is set;
  JAX reports it as `JaxRuntimeError` whose text holds the message. A valid
  batch costs one scalar predicate, no callback into Python;
- symbolic `keras.KerasTensor`s (functional model building): no check.

The flag is a scalar bool tensor computed with `keras.ops` by the caller, so
the per-element work stays on the device; the `details` function (numpy →
str) only runs once something is wrong.
"""

import keras
import numpy as np
from keras import ops


def is_concrete(x):
    """True when `x` holds values now (not a KerasTensor, tf graph tensor or JAX tracer)."""
    if isinstance(x, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        # TensorFlow-specific: graph tensors (tf.function, tf.data) have no value.
        import tensorflow as tf

        return not (isinstance(x, tf.Tensor) and tf.is_symbolic_tensor(x))
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if backend == "torch":
        import torch

        return not torch.compiler.is_compiling()
    return True


def concrete_value(x):
    """`x` as a numpy array when it is concrete, else None."""
    if not is_concrete(x):
        return None
    return np.asarray(ops.convert_to_numpy(x))


def raise_if(flag, message, details, data, guard):
    """Raises `ValueError` when the scalar bool `flag` is true; returns `guard`.

    Args:
        flag: scalar bool tensor (True = bad input).
        message: static text naming the argument and what is allowed.
        details: function of the numpy values of `data` (as keyword
            arguments) returning the "Received ..." part of the message (runs
            only on failure).
        data: dict name -> tensor describing the bad input (small: counts,
            min, max, one row); TensorFlow graphs print them by name.
        guard: the tensor to return; in TensorFlow graphs it is returned
            under a control dependency on the assertion so that the check runs
            whenever the value is used.
    """
    if isinstance(flag, keras.KerasTensor):
        return guard
    backend = keras.backend.backend()
    if is_concrete(flag):
        if bool(np.asarray(ops.convert_to_numpy(flag))):
            values = {k: np.asarray(ops.convert_to_numpy(v)) for k, v in data.items()}
            raise ValueError(f"{message} {details(**values)}")
        return guard
    if backend == "tensorflow":
        return _tf_assert(flag, message, data, guard)
    if backend == "jax":
        import jax

        def fail(values):
            values = {k: np.asarray(v) for k, v in values.items()}
            raise ValueError(f"{message} {details(**values)}")

        jax.lax.cond(flag, lambda: jax.debug.callback(fail, dict(data)), lambda: None)
        return guard
    return guard


def _tf_assert(flag, message, data, guard):
    # TensorFlow-specific: the graph-mode form of the check (see module docstring).
    import tensorflow as tf

    printed = [message + " Received:"]
    for name, value in data.items():
        printed += [f"{name} =", value]
    assertion = tf.debugging.Assert(tf.logical_not(flag), printed, summarize=16)
    with tf.control_dependencies([assertion]):
        return tf.identity(guard)
