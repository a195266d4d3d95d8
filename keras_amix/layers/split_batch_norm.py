"""Split BatchNorm: MoCo's shuffling BN on one device.

MoCo (He et al. 2020, §3.3) trains each GPU's BatchNorm on its own share of
the batch and feeds the key encoder a shuffled batch, so that a query and its
positive key are normalised with statistics of different samples: with one BN
over the whole batch both carry the same batch statistics, a signature that
the queue's negatives lack, and the model can find the positive by it instead
of by the image ("cheating"). On one device MoCo's own CIFAR demo splits the
batch into groups, each normalised by its own statistics (a "SplitBatchNorm"),
and reorders the key batch across the groups; the official 8-GPU MoCo v2
normalises groups of 32 of its 256 images.

`SplitBatchNormalization` is Keras' `BatchNormalization` whose training
statistics are those of `num_splits` equal, consecutive groups of the batch;
the moving statistics take the mean of the groups' (so inference is plain
BatchNorm). `interleave` / `deinterleave` reorder a batch so that each group
of the reordered batch takes rows of every group of the original: the key
encoder's reordering (a fixed one: the pipeline shuffles the data every epoch,
and a fixed order keeps replicas and reruns identical without a draw).
"""

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_amix")
class SplitBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization over `num_splits` groups of the batch in training.

    In training, sample `i` of a batch of `B` (a multiple of `num_splits`) is
    normalised by the mean and (biased) variance of its group
    `i // (B / num_splits)`, over the group's samples and spatial positions;
    the moving mean and variance follow the mean over groups of the group
    statistics (with `momentum`, as BatchNormalization). In inference, and with
    `num_splits=1`, it is `keras.layers.BatchNormalization`. Channels last
    (`axis=-1`) only.

    Args:
        num_splits: int >= 1, the number of groups.
        **kwargs: `keras.layers.BatchNormalization`'s (no `renorm`,
            `synchronized`, other `axis`).
    """

    def __init__(self, num_splits=2, **kwargs):
        if isinstance(num_splits, bool) or not isinstance(num_splits, numbers.Integral) \
                or num_splits < 1:
            raise ValueError(f"`num_splits` must be an int >= 1; received {num_splits!r}.")
        for name, allowed in (("axis", -1), ("renorm", False), ("synchronized", False)):
            if name in kwargs and kwargs[name] != allowed:
                raise ValueError(f"SplitBatchNormalization supports {name}={allowed!r} only; "
                                 f"received {name}={kwargs[name]!r}.")
        super().__init__(**kwargs)
        self.num_splits = int(num_splits)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or self.num_splits == 1 or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        batch = inputs.shape[0]
        if batch is not None and batch % self.num_splits:
            raise ValueError(f"{self.name}: the batch ({batch}) must be a multiple of "
                             f"num_splits={self.num_splits}.")
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)
        grouped = ops.reshape(x, (self.num_splits, -1, *x.shape[1:]))
        axes = tuple(range(1, len(grouped.shape) - 1))  # samples and positions
        mean, variance = ops.moments(grouped, axes=axes, keepdims=True)
        self.moving_mean.assign(
            ops.cast(self.moving_mean, compute_dtype) * self.momentum
            + ops.mean(ops.reshape(mean, (self.num_splits, -1)), axis=0) * (1.0 - self.momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, compute_dtype) * self.momentum
            + ops.mean(ops.reshape(variance, (self.num_splits, -1)), axis=0)
            * (1.0 - self.momentum))
        y = (grouped - mean) * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            y = y * ops.cast(self.gamma, compute_dtype)
        if self.center:
            y = y + ops.cast(self.beta, compute_dtype)
        return ops.cast(ops.reshape(y, ops.shape(x)), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "num_splits": self.num_splits}


def _regroup(x, num_splits, inverse):
    """The transpose of `x`'s (num_splits, n) blocks of rows, or (`inverse`) of
    its (n, num_splits) blocks."""
    batch = x.shape[0]
    if batch is None:
        raise ValueError("Reordering the batch needs a static batch size (batch the pipeline "
                         "with drop_remainder=True); received None.")
    if batch % num_splits:
        raise ValueError(f"The batch ({batch}) must be a multiple of num_splits={num_splits}.")
    if num_splits == 1:
        return x
    rows = batch // num_splits if inverse else num_splits
    rest = tuple(x.shape[1:])
    blocks = ops.reshape(x, (rows, batch // rows, *rest))
    return ops.reshape(ops.transpose(blocks, (1, 0, *range(2, len(rest) + 2))), (batch, *rest))


def interleave(x, num_splits):
    """`x` (B rows: `num_splits` groups of n = B / num_splits consecutive
    rows) with its groups spread over the groups: row `a * num_splits + b` of
    the result is row `b * n + a` of `x` (the transpose of the (groups, n)
    blocks), so each group of the result takes n / num_splits rows of every
    group of `x` (one row of each of n groups when n < num_splits), and a row
    shares its group with few of its old group's rows. `deinterleave` undoes
    it."""
    return _regroup(x, num_splits, inverse=False)


def deinterleave(x, num_splits):
    """The inverse of `interleave`."""
    return _regroup(x, num_splits, inverse=True)


def num_splits(model):
    """The `num_splits` of the `SplitBatchNormalization` layers in `model`
    (nested models included): 1 when it has none; a ValueError when they
    differ (one reordering of the batch must fit them all)."""
    found, todo = set(), [model]
    while todo:
        layer = todo.pop()
        if isinstance(layer, SplitBatchNormalization):
            found.add(layer.num_splits)
        todo.extend(getattr(layer, "layers", ()))
    if len(found) > 1:
        raise ValueError(f"{model.name}'s SplitBatchNormalization layers must share one "
                         f"num_splits; received {sorted(found)}.")
    return found.pop() if found else 1
