"""Hypothesis properties of every loss in keras_amix.losses.

Batch 2-9, input dtypes uint8 / float16 / bfloat16 / float32, λ at 0, 1,
1e-7, 1 − 1e-7 (scalar or per sample), constant inputs (all-zero embeddings,
equal logits) and all-equal labels: per-sample losses are finite, float32,
of shape (B,) and non-negative; mask losses are finite scalars; the
batch-centred mask variance is the sample-centred one plus the variance of
the per-sample means.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from keras_amix import losses

PROPERTY = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DTYPES = ("uint8", "float16", "bfloat16", "float32")


def _np(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")), dtype="float64")


@st.composite
def loss_inputs(draw):
    batch = draw(st.sampled_from((2, 5, 9)))
    classes, dim, queue = 5, 4, 7
    dtype = draw(st.sampled_from(DTYPES))
    constant = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    high = 255.0 if dtype == "uint8" else 30.0  # large logits: saturated softmax
    low = 0.0 if dtype == "uint8" else -high

    def values(shape):
        if constant:
            return ops.cast(np.zeros(shape, "float32"), dtype)
        return ops.cast(rng.uniform(low, high, shape).astype("float32"), dtype)

    if draw(st.booleans()):
        ids_a = ids_b = np.full((batch,), rng.integers(0, classes))
    else:
        ids_a, ids_b = rng.integers(0, classes, batch), rng.integers(0, classes, batch)
    lam = draw(st.sampled_from((0.0, 1.0, 1e-7, 1.0 - 1e-7, 0.4)))
    if draw(st.booleans()):
        lam = np.full((batch,), lam, "float32")
    eye = np.eye(classes, dtype="float32")
    return {
        "batch": batch,
        "lam": lam,
        "logits": values((batch, classes)),
        "labels_a": eye[ids_a],
        "labels_b": eye[ids_b],
        "z_mix": values((batch, dim)),
        "z_a": values((batch, dim)),
        "z_b": values((batch, dim)),
        "queue": values((queue, dim)),
        "mask": ops.cast(rng.uniform(0, 1, (batch, 5, 7, 1)).astype("float32"), dtype)
        if dtype != "uint8"
        else ops.cast(rng.integers(0, 2, (batch, 5, 7, 1)), "uint8"),
    }


def _check_per_sample(out, batch):
    assert tuple(out.shape) == (batch,)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    values = _np(out)
    assert np.all(np.isfinite(values)), values
    assert np.all(values >= -1e-5), values
    return values


@pytest.mark.parametrize("name", losses.available() + ["ce+bce", "infonce+0.5*bce"])
@PROPERTY
@given(inputs=loss_inputs())
def test_named_losses_are_finite(name, inputs):
    batch = inputs.pop("batch")
    inputs.pop("mask")
    loss = losses.get(name)
    _check_per_sample(loss(**inputs), batch)
    if name == "ce":
        # Equal to the soft-target CE of the mixed labels (eq. 3).
        lam = np.reshape(inputs["lam"], (-1, 1))
        mixed = lam * inputs["labels_a"] + (1 - lam) * inputs["labels_b"]
        np.testing.assert_allclose(
            _np(loss(**inputs)),
            _np(losses.soft_target_cross_entropy(mixed, inputs["logits"])),
            rtol=1e-4, atol=1e-4,
        )


@PROPERTY
@given(inputs=loss_inputs())
def test_function_losses_are_finite(inputs):
    batch, lam = inputs["batch"], inputs["lam"]
    _check_per_sample(losses.soft_target_cross_entropy(inputs["labels_a"], inputs["logits"]), batch)
    _check_per_sample(losses.info_nce(inputs["z_mix"], inputs["z_a"], inputs["queue"]), batch)
    out = losses.SoftTargetCrossEntropy()(inputs["labels_a"], inputs["logits"])
    assert np.isfinite(_np(out))
    pbce = _check_per_sample(
        losses.parametric_binary_cross_entropy(
            inputs["logits"], inputs["labels_a"], inputs["labels_a"], lam
        ),
        batch,
    )
    # Both sides the same class: the two logits coincide, log 2 exactly.
    np.testing.assert_allclose(pbce, np.log(2.0), rtol=1e-6)
    mask = inputs["mask"]
    for value in (
        losses.mask_loss(mask, lam),
        losses.mask_loss(mask, lam, mode="mean", reduction="sample"),
        losses.mask_mean_loss(mask, lam),
        losses.mask_variance(mask),
        losses.mask_variance(mask, center="batch"),
        losses.mask_loss(mask, lam, var_center="batch"),
    ):
        assert tuple(value.shape) == () and np.isfinite(_np(value))
    assert 0.0 <= float(_np(losses.mask_variance(mask))) <= 0.25


@PROPERTY
@given(batch=st.integers(1, 6), seed=st.integers(0, 2**16), power=st.floats(0.2, 4.0))
def test_batch_centred_variance_bounds_the_sample_one(batch, seed, power):
    """Var around the batch mean = mean per-sample var + var of the per-sample means (same
    pixel count per mask): never smaller, equal when every mask has the same mean."""
    rng = np.random.default_rng(seed)
    mask = rng.uniform(0, 1, (batch, 3, 5, 1)) ** power
    means = mask.mean(axis=(1, 2, 3))
    sample = float(_np(losses.mask_variance(mask.astype("float32"))))
    centred = float(_np(losses.mask_variance(mask.astype("float32"), center="batch")))
    assert centred >= sample - 1e-7
    np.testing.assert_allclose(centred - sample, np.var(means), atol=1e-6)
    # the same masks shifted to share one mean (0.5): the two centrings agree
    shifted = (0.5 * (mask - means[:, None, None, None]) + 0.5).astype("float32")
    np.testing.assert_allclose(
        float(_np(losses.mask_variance(shifted, center="batch"))),
        float(_np(losses.mask_variance(shifted))), atol=1e-7,
    )
    if batch > 1 and np.var(means) > 1e-4:
        assert centred > sample
