"""Hypothesis properties of the Mix Block, and its shape checks.

Batch 2-9, odd / non-square feature and image sizes, feature dtypes uint8 /
float16 / bfloat16 / float32, λ at 0, 1, 1e-7, 1 − 1e-7 (scalar or per
sample), constant features: the mask is float32, finite, in [0, 1]; λ
adjusting gives per-sample means λ; the mask loss is a finite scalar.
SAMix's λ rescaling is increasing on [0, 1], fixes 0, 1/2 and 1, and is
symmetric about 1/2.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from keras_amix.layers import MixBlock
from keras_amix.layers import rescale_lambda

PROPERTY = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EDGE_LAMS = (0.0, 1.0, 1e-7, 1.0 - 1e-7, 0.37)


def _np32(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")), dtype="float64")


@pytest.mark.parametrize("preset", ["automix", "amix", "amix_official"])
@PROPERTY
@given(
    batch=st.sampled_from((2, 3, 9)),
    sizes=st.sampled_from((((3, 5), (7, 9)), ((4, 4), (8, 12)))),
    dtype=st.sampled_from(("uint8", "float16", "bfloat16", "float32")),
    lam=st.sampled_from(EDGE_LAMS),
    per_sample=st.booleans(),
    constant=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_mask_properties(preset, batch, sizes, dtype, lam, per_sample, constant, seed):
    (h, w), image_size = sizes
    rng = np.random.default_rng(seed)
    if constant:
        z = np.full((batch, h, w, 6), 3.0, "float32")
    else:
        z = rng.uniform(0, 200 if dtype == "uint8" else 4, (batch, h, w, 6)).astype("float32")
    za = ops.cast(z, dtype)
    zb = ops.take(za, rng.permutation(batch), axis=0)
    lam_in = np.full((batch,), lam, "float32") if per_sample else lam
    block = MixBlock(preset=preset, seed=seed % 1000)
    mask = block(za, zb, lam_in, image_size=image_size, training=True)
    assert tuple(mask.shape) == (batch,) + image_size + (1,)
    assert keras.backend.standardize_dtype(mask.dtype) == "float32"
    m = _np32(mask)
    assert np.all(np.isfinite(m)) and m.min() >= 0.0 and m.max() <= 1.0
    adjusted = _np32(block.adjust_lambda(mask, lam_in))
    assert np.all(np.isfinite(adjusted)) and adjusted.min() >= 0.0 and adjusted.max() <= 1.0
    np.testing.assert_allclose(adjusted.mean(axis=(1, 2, 3)), lam, atol=1e-4)
    encoder = _np32(block.mask_for_encoder(mask, lam_in))
    assert np.all(np.isfinite(encoder)) and encoder.min() >= 0.0 and encoder.max() <= 1.0
    loss = _np32(block.mask_loss(mask, lam_in))
    assert loss.shape == () and np.isfinite(loss)


def test_batch_mismatch_and_lam_length_are_value_errors():
    rng = np.random.default_rng(0)
    za = rng.normal(size=(4, 3, 5, 6)).astype("float32")
    block = MixBlock(preset="amix")
    with pytest.raises(ValueError, match=r"same batch size.*\(4, 3, 5, 6\).*\(3, 3, 5, 6\)"):
        block(za, za[:3], 0.5, image_size=(6, 10))
    with pytest.raises(ValueError, match=r"length 4, the batch size.*lam.shape=\(3,\)"):
        block(za, za[::-1], np.full((3,), 0.5, "float32"), image_size=(6, 10))
    with pytest.raises(ValueError, match=r"lam.shape=\(4, 2\)"):
        block(za, za[::-1], np.full((4, 2), 0.5, "float32"), image_size=(6, 10))
    with pytest.raises(ValueError, match=r"features_a.dtype=bool"):
        block(za > 0, za[::-1] > 0, 0.5, image_size=(6, 10))
    mask = block(za, za[::-1], np.full((4,), 0.5, "float32"), image_size=(6, 10))
    assert tuple(mask.shape) == (4, 6, 10, 1)
    for method in (block.mask_loss, block.adjust_lambda, block.mask_for_encoder):
        with pytest.raises(ValueError, match=r"length 4.*lam.shape=\(2,\)"):
            method(mask, np.full((2,), 0.5, "float32"))
    with pytest.raises(ValueError, match=r"lam=\[nan\]"):
        block(za, za[::-1], np.array([np.nan], "float32"), image_size=(6, 10))


def test_batch_mismatch_in_a_symbolic_call():
    za = keras.Input((3, 5, 6), batch_size=4)
    zb = keras.Input((3, 5, 6), batch_size=2)
    with pytest.raises(ValueError, match="same batch size"):
        MixBlock(preset="automix")(za, zb, 0.5, image_size=(6, 10))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    k=st.one_of(st.sampled_from((0.0, 0.25, 10.0)), st.floats(0.0, 10.0)),
    seed=st.integers(0, 2**16),
)
def test_rescale_lambda_is_monotone_with_fixed_points(k, seed):
    """λ' is increasing on [0, 1] (a k' = k slip breaks it for k < 1), λ'(0, ½, 1) = 0, ½, 1,
    λ'(1 - λ) = 1 - λ'(λ), and λ' lies in [0, 1]."""
    lam = np.concatenate([
        np.linspace(0.0, 1.0, 201), np.random.default_rng(seed).uniform(0, 1, 50)
    ]).astype("float32")
    lam.sort()
    out = _np32(rescale_lambda(lam, k))
    assert np.all(np.diff(out) >= -1e-6), k
    np.testing.assert_allclose(_np32(rescale_lambda(np.array([0.0, 0.5, 1.0], "float32"), k)),
                               [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(_np32(rescale_lambda(1.0 - lam, k)), 1.0 - out, atol=2e-6)
    assert out.min() >= -1e-6 and out.max() <= 1.0 + 1e-6
    # a small k pulls λ towards 1/2, never past it
    assert np.all(np.abs(out - 0.5) <= np.abs(lam - 0.5) + 1e-6)
