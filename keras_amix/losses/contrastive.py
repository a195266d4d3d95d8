"""Non-parametric (embedding) losses: infoNCE, mixup infoNCE and BCE.

Embeddings are L2-normalised *inside* these functions when ``normalize=True``
(the default; idempotent for inputs that already are). The queue is
``(K, d)``, one key per row. All functions compute in float32 and return
per-sample losses of shape ``(B,)``.
"""

from keras import ops


def _f32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def l2_normalize(x):
    """x / ‖x‖ over the last axis in float32 (‖x‖ floored at 1e-12): MoCo's embeddings."""
    x = _f32(x)
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))


def _l2_normalize(x, normalize):
    return l2_normalize(x) if normalize else _f32(x)


def _lam_vector(lam):
    return ops.reshape(_f32(lam), (-1,))


def _check_temperature(temperature):
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"`temperature` must be > 0; received temperature={temperature!r}.")


def _nce(q, k_pos, queue, temperature, negative_mask=None):
    """(K+1)-way CE with the positive logit at index 0; inputs already normalised.
    `negative_mask` (B, K) bool keeps the negatives where True."""
    pos = ops.sum(q * k_pos, axis=-1, keepdims=True)  # (B, 1)
    neg = ops.matmul(q, ops.transpose(queue))  # (B, K)
    if negative_mask is not None:
        # exp(-1e9 / t) is exactly 0 in float32: a dropped negative adds nothing.
        neg = ops.where(negative_mask, neg, -1e9)
    logits = ops.concatenate([pos, neg], axis=-1) / temperature
    return ops.logsumexp(logits, axis=-1) - logits[:, 0]


def info_nce(q, k_pos, queue, temperature=0.2, normalize=True):
    """infoNCE (paper eq. 2): a (K+1)-way softmax with the positive at index 0.

    ``L = -log exp(q.k+/t) / (exp(q.k+/t) + sum_j exp(q.k_j/t))``.

    Args:
        q: ``(B, d)`` query embeddings.
        k_pos: ``(B, d)`` positive keys.
        queue: ``(K, d)`` negative keys.
        temperature: ``t`` (0.2 in MoCo v2).
        normalize: L2-normalise ``q``, ``k_pos`` and ``queue`` first.

    Returns:
        ``(B,)`` float32 losses.
    """
    _check_temperature(temperature)
    q = _l2_normalize(q, normalize)
    k_pos = _l2_normalize(k_pos, normalize)
    queue = _l2_normalize(queue, normalize)
    return _nce(q, k_pos, queue, temperature)


def mixup_info_nce(q_mix, k_a, k_b, queue, lam, temperature=0.2, normalize=True,
                   negative_mask=None):
    """Mixup infoNCE (paper eq. 4): ``lam NCE(q_mix, k_a) + (1 - lam) NCE(q_mix, k_b)``.

    Each term is the (K+1)-way infoNCE of `info_nce` against the same queue.
    With ``negative_mask`` ((B, K) bool) only the queue's keys where it is
    True are negatives of sample b: the label-filtered "infoNCE (L)" and
    "infoNCE (PL)" of the paper's Table 1, which drop the negatives that
    share a (pseudo) label with either source.

    Args:
        q_mix: ``(B, d)`` embeddings of the mixed images.
        k_a: ``(B, d)`` keys of the first sources (weight ``lam``).
        k_b: ``(B, d)`` keys of the paired sources.
        queue: ``(K, d)``.
        lam: scalar or ``(B,)``.

    Returns:
        ``(B,)`` float32 losses.
    """
    _check_temperature(temperature)
    q_mix = _l2_normalize(q_mix, normalize)
    k_a = _l2_normalize(k_a, normalize)
    k_b = _l2_normalize(k_b, normalize)
    queue = _l2_normalize(queue, normalize)
    lam = _lam_vector(lam)
    return lam * _nce(q_mix, k_a, queue, temperature, negative_mask) + (1.0 - lam) * _nce(
        q_mix, k_b, queue, temperature, negative_mask
    )


def binary_cross_entropy_embeddings(z_mix, z_a, z_b, lam, temperature=0.2, normalize=True):
    """Non-parametric BCE (paper eq. 6).

    A 2-way softmax over the cosine similarities of ``z_mix`` to the two
    sources, ``(z_mix.z_a / t, z_mix.z_b / t)``, with target ``(lam, 1 - lam)``.
    (Eq. 6 is printed as a ratio of raw similarities; this is the softmax form
    stated in DESIGN.md, which is a proper cross-entropy.)

    Returns:
        ``(B,)`` float32 losses.
    """
    _check_temperature(temperature)
    z_mix = _l2_normalize(z_mix, normalize)
    z_a = _l2_normalize(z_a, normalize)
    z_b = _l2_normalize(z_b, normalize)
    lam = _lam_vector(lam)
    diff = (ops.sum(z_mix * z_a, axis=-1) - ops.sum(z_mix * z_b, axis=-1)) / temperature
    return -(lam * ops.log_sigmoid(diff) + (1.0 - lam) * ops.log_sigmoid(-diff))
