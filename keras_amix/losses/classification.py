"""Parametric (classifier-logit) losses for mixup training.

All functions take logits (not probabilities), compute in float32 and return
per-sample losses of shape ``(B,)`` like `keras.losses.categorical_crossentropy`;
reduce them with `keras.ops.mean` (or use the `keras.losses.Loss` wrapper).
``lam`` is the weight of the *first* sample and may be a scalar or ``(B,)``.
"""

import keras
from keras import ops


def _f32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _lam_vector(lam):
    """float32 lam of shape (1,) or (B,), broadcastable against (B,)."""
    return ops.reshape(_f32(lam), (-1,))


def soft_target_cross_entropy(labels, logits):
    """``-sum_c y_c log softmax(logits)_c`` per sample, for soft (mixed) labels.

    Args:
        labels: ``(B, K)`` label distributions (rows sum to 1).
        logits: ``(B, K)`` unnormalised scores.

    Returns:
        ``(B,)`` float32 losses.
    """
    labels = _f32(labels)
    log_probs = ops.log_softmax(_f32(logits), axis=-1)
    return -ops.sum(labels * log_probs, axis=-1)


def mixup_cross_entropy(logits, labels_a, labels_b, lam):
    """Mixup CE (paper eq. 3): ``lam CE(y_a) + (1 - lam) CE(y_b)``.

    Equal to `soft_target_cross_entropy` with ``lam y_a + (1 - lam) y_b``.

    Args:
        logits: ``(B, K)``.
        labels_a: ``(B, K)`` one-hot or soft labels of the first samples.
        labels_b: ``(B, K)`` labels of the paired samples.
        lam: scalar or ``(B,)``.

    Returns:
        ``(B,)`` float32 losses.
    """
    lam = _lam_vector(lam)
    return lam * soft_target_cross_entropy(labels_a, logits) + (
        1.0 - lam
    ) * soft_target_cross_entropy(labels_b, logits)


def parametric_binary_cross_entropy(logits, labels_a, labels_b, lam):
    """pBCE (paper section 3.3): the local part of the mixup CE.

    A 2-way softmax over the logits of the two mixed classes only,
    ``l_a = <logits, y_a>`` and ``l_b = <logits, y_b>``, with target
    ``(lam, 1 - lam)``: ``-[lam log sigmoid(l_a - l_b) + (1 - lam) log
    sigmoid(l_b - l_a)]``. For one-hot labels ``l_a`` is the logit of class
    ``a``; soft labels give the label-weighted logit. When both samples share
    the class the two logits coincide and the loss is the constant ``log 2``.

    Returns:
        ``(B,)`` float32 losses.
    """
    logits = _f32(logits)
    lam = _lam_vector(lam)
    logit_a = ops.sum(logits * _f32(labels_a), axis=-1)
    logit_b = ops.sum(logits * _f32(labels_b), axis=-1)
    diff = logit_a - logit_b
    return -(lam * ops.log_sigmoid(diff) + (1.0 - lam) * ops.log_sigmoid(-diff))


@keras.saving.register_keras_serializable(package="keras_amix")
class SoftTargetCrossEntropy(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `soft_target_cross_entropy` (``y_pred`` are logits).

    Args:
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    >>> model.compile(optimizer="sgd", loss=SoftTargetCrossEntropy())

    Reference: mixup (Zhang et al., 2018); AMix paper eq. 3.
    """

    def __init__(self, reduction="sum_over_batch_size", name="soft_target_cross_entropy", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        return soft_target_cross_entropy(y_true, y_pred)
