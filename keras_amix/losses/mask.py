"""Losses on the pixel mixing mask predicted by the Mix Block.

Reference: AMix paper section 3.2 ("Prior knowledge of mixup"); DESIGN.md section 4.

A mask ``s`` has shape ``(B, H, W, 1)`` (or ``(B, H, W)``) with values in
``[0, 1]`` and is the weight of the *first* image of each pair, so its mean
should be close to ``lam`` (the weight of the first label).
"""

from keras import ops

MEAN_REDUCTIONS = ("batch", "sample")
VAR_CENTERS = ("sample", "batch")


def _as_float32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _flatten_mask(mask):
    """(B, H, W[, 1]) -> (B, H*W) in float32."""
    mask = _as_float32(mask)
    return ops.reshape(mask, (ops.shape(mask)[0], -1))


def mask_mean_loss(mask, lam, margin=0.1, reduction="batch"):
    """Hinge on the distance between the mask mean and ``lam``.

    ``L_mean = max(|mean(s) - lam| - margin, 0)``.

    Args:
        mask: ``(B, H, W, 1)`` mask, the weight of the first image.
        lam: scalar or ``(B,)`` mixing ratio.
        margin: the tolerance ``epsilon`` (0.1 in the paper).
        reduction: ``"batch"`` (DESIGN.md section 4 and the official code): the
            mean of the mask over the batch *and* the pixels is compared with the
            batch-mean ``lam`` (identical to the official code, which uses one
            ``lam`` per batch). ``"sample"`` (the paper's per-image ``mu_i``):
            ``mean_b max(|mean_pixels(s_b) - lam_b| - margin, 0)``.

    Returns:
        A float32 scalar.
    """
    if reduction not in MEAN_REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {MEAN_REDUCTIONS}; received reduction={reduction!r}."
        )
    flat = _flatten_mask(mask)
    lam = ops.reshape(_as_float32(lam), (-1,))
    if reduction == "batch":
        gap = ops.abs(ops.mean(flat) - ops.mean(lam))
        return ops.maximum(gap - margin, 0.0)
    per_sample = ops.abs(ops.mean(flat, axis=1) - lam)
    return ops.mean(ops.maximum(per_sample - margin, 0.0))


def mask_variance(mask, center="sample"):
    """Pixel variance of the masks, a float32 scalar.

    ``center="sample"`` (the paper's formula): each mask around its own mean,
    averaged over the batch, ``L_var = mean_b (1/HW) sum_hw (s_bhw - mu_b)^2``.

    ``center="batch"`` (the official ``L1+Variance`` loss): the squared
    deviation from the mean ``mu`` of the whole batch of masks over all
    pixels, ``L_var = (1/BHW) sum_bhw (s_bhw - mu)^2``. As every mask has the
    same pixel count, this is the ``"sample"`` value plus the variance of the
    per-sample means ``mu_b``: never smaller, equal when all masks share
    their mean.

    Args:
        mask: ``(B, H, W, 1)`` (or ``(B, H, W)``) mask.
        center: ``"sample"`` or ``"batch"``.
    """
    if center not in VAR_CENTERS:
        raise ValueError(
            f"`center` must be one of {VAR_CENTERS}; received center={center!r}."
        )
    flat = _flatten_mask(mask)
    if center == "batch":
        return ops.mean(ops.square(flat - ops.mean(flat)))
    return ops.mean(ops.var(flat, axis=1))


def mask_loss(
    mask,
    lam,
    mode="mean+var",
    weight=0.1,
    margin=0.1,
    var_weight=2.0,
    reduction="batch",
    var_center="sample",
):
    """The Mix Block mask loss ``weight * (L_mean - var_weight * L_var)``.

    The paper writes ``beta * (L_mean + L_var)`` while describing the variance
    term as encouraging sparse (near-binary) masks; the official code subtracts
    ``2 * Var``. The default ``var_weight=2.0`` is the official sign (binary-like
    masks); a negative ``var_weight`` (e.g. ``-1.0``) gives the paper's
    ``+ L_var``.

    Args:
        mask: ``(B, H, W, 1)`` mask, the weight of the first image.
        lam: scalar or ``(B,)``.
        mode: ``"mean"`` (AutoMix) or ``"mean+var"`` (AMix).
        weight: ``beta`` (0.1).
        margin: ``epsilon`` of ``L_mean`` (0.1).
        var_weight: weight of the subtracted variance term (2.0).
        reduction: see `mask_mean_loss`.
        var_center: ``"sample"`` (the paper) or ``"batch"`` (the official
            code); see `mask_variance`.

    Returns:
        A float32 scalar.
    """
    if mode not in ("mean", "mean+var"):
        raise ValueError(
            f"`mode` must be one of ('mean', 'mean+var'); received mode={mode!r}."
        )
    if var_center not in VAR_CENTERS:
        raise ValueError(
            f"`var_center` must be one of {VAR_CENTERS}; received var_center={var_center!r}."
        )
    loss = mask_mean_loss(mask, lam, margin=margin, reduction=reduction)
    if mode == "mean+var":
        loss = loss - var_weight * mask_variance(mask, center=var_center)
    return weight * loss
