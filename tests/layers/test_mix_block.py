"""Tests of keras_amix.layers.MixBlock (AutoMix Mix Block / AMix Mix Block+)."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_amix.layers import MixBlock
from keras_amix.layers import adjust_lambda
from keras_amix.layers import mask_statistics
from keras_amix.layers import rescale_lambda
from keras_amix.layers.mix_block import PRESETS
from keras_amix.layers.mix_block import SWITCHES

BACKEND = keras.backend.backend()


# ----------------------------------------------------------------- helpers


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _features(rng, batch=2, h=2, w=2, c=4, scale=1.0):
    za = (scale * rng.standard_normal((batch, h, w, c))).astype("float32")
    zb = (scale * rng.standard_normal((batch, h, w, c))).astype("float32")
    return za, zb


def _randomize(block, rng, std=0.5):
    """Give every kernel/bias non-trivial values so formulas are distinguishable."""
    for v in block.trainable_variables:
        if v.path.endswith("gamma") and len(v.shape) == 0:
            continue
        v.assign(rng.normal(0.0, std, size=v.shape).astype("float32"))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _conv1x1(x, conv):
    out = x @ _np(conv.kernel)[0, 0]
    return out if conv.bias is None else out + _np(conv.bias)


def _rescale_by_formula(lam, k):
    """SAMix's rescaling written out: k' = k + 1, (4/3 l^3 - 2 l^2 + k' l) / (k' - 2/3)."""
    k1 = k + 1.0
    return (4.0 / 3.0 * lam**3 - 2.0 * lam**2 + k1 * lam) / (k1 - 2.0 / 3.0)


def _resize_nearest(x, size):
    fh, fw = size[0] // x.shape[1], size[1] // x.shape[2]
    return np.repeat(np.repeat(x, fh, axis=1), fw, axis=2)


def _resize_bilinear(x, size):
    """Half-pixel bilinear upsampling (torch F.interpolate align_corners=False)."""

    def weights(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = src - lo
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), lo] += 1 - frac
        m[np.arange(n_out), hi] += frac
        return m

    wh = weights(x.shape[1], size[0])
    ww = weights(x.shape[2], size[1])
    return np.einsum("Hh,bhwc,Ww->bHWc", wh, x, ww)


def reference_logits(block, za, zb, lam, softmax_axis=-1, scale=None):
    """Low-resolution logits P v per DESIGN section 4 (inference mode), numpy."""
    za = za.astype("float64")
    zb = zb.astype("float64")
    batch, h, w, c = za.shape
    lam = np.broadcast_to(np.asarray(lam, "float64").reshape(-1), (batch,)).reshape(-1, 1, 1, 1)
    if block.lam_encoding == "concat":
        za = np.concatenate([za, np.broadcast_to(lam, (batch, h, w, 1))], -1)
        zb = np.concatenate([zb, np.broadcast_to(1 - lam, (batch, h, w, 1))], -1)
    elif block.lam_encoding == "adaptive":
        g = float(_np(block.gamma_weight)) if block.gamma == "learned" else block.gamma
        g = min(max(g, 0.0), 1.0)
        if block.lam_rescale_k is not None:
            lam = _rescale_by_formula(lam, block.lam_rescale_k)
        za = (1 + g * lam) * za
        zb = (1 + g * (1 - lam)) * zb
    if block.content == "linear":
        v = _conv1x1(zb, block.value_conv)
    else:
        hdn = _conv1x1(zb, block.value_conv1)
        bn = block.value_norm
        hdn = (hdn - _np(bn.moving_mean)) / np.sqrt(_np(bn.moving_variance) + bn.epsilon)
        hdn = hdn * _np(bn.gamma) + _np(bn.beta)
        hdn = np.maximum(hdn, 0) if block.activation == "relu" else np.where(
            hdn > 0, hdn, np.expm1(hdn)
        )
        v = _conv1x1(hdn, block.value_conv2)
    if block.attention == "cross":
        q = _conv1x1(za, block.query_conv)
        k = _conv1x1(zb, block.query_conv)
    else:
        cat = np.concatenate([za, zb], -1)
        q = _conv1x1(cat, block.query_conv)
        k = _conv1x1(cat, block.key_conv)
    d = q.shape[-1]
    n = h * w
    q = q.reshape(batch, n, d)
    k = k.reshape(batch, n, d)
    scores = q @ k.transpose(0, 2, 1) / (math.sqrt(d) if scale is None else scale)
    scores = scores - scores.max(axis=softmax_axis, keepdims=True)
    p = np.exp(scores) / np.exp(scores).sum(axis=softmax_axis, keepdims=True)
    return (p @ v.reshape(batch, n, 1)).reshape(batch, h, w, 1)


def reference_mask(block, za, zb, lam, size, **kwargs):
    logits = reference_logits(block, za, zb, lam, **kwargs)
    up = _resize_nearest if block.upsample == "nearest" else _resize_bilinear
    return 1.0 - _sigmoid(up(logits, size))


def gradients(block, loss_fn, *args, **kwargs):
    """Gradients of loss_fn(block(*args, **kwargs)) w.r.t. block.trainable_variables."""
    variables = block.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(block(*args, **kwargs))
        grads = tape.gradient(loss, variables)
    elif BACKEND == "jax":
        import jax

        non_trainable = [v.value for v in block.non_trainable_variables]

        def f(trainable):
            out, _ = block.stateless_call(trainable, non_trainable, *args, **kwargs)
            return loss_fn(out)

        grads = jax.jit(jax.grad(f))([v.value for v in variables])
    else:
        import torch

        loss = loss_fn(block(*args, **kwargs))
        if not loss.requires_grad:  # nothing upstream is differentiable
            grads = [None] * len(variables)
        else:
            grads = torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)
    return {v.path: (None if g is None else _np(g)) for v, g in zip(variables, grads)}


ALL_SWITCH_CASES = [
    ("lam_encoding", "none"),
    ("lam_encoding", "concat"),
    ("lam_encoding", "adaptive"),
    ("gamma", 0.5),
    ("content", "linear"),
    ("content", "nonlinear"),
    ("activation", "elu"),
    ("dropout", 0.0),
    ("attention", "cross"),
    ("attention", "global"),
    ("upsample", "nearest"),
    ("upsample", "bilinear"),
    ("mask_loss", "mean"),
    ("mask_loss", "mean+var"),
    ("var_weight", -1.0),
    ("mean_reduction", "sample"),
    ("lam_adjust_prob", 0.25),
    ("lam_margin", 0.08),
    ("lam_rescale_k", 0.25),
    ("value_bias", False),
    ("norm_epsilon", 1e-5),
    ("norm_momentum", 0.9),
    ("var_center", "batch"),
]


# ------------------------------------------------------- exact formulas


@pytest.mark.parametrize("lam_encoding", ["none", "concat", "adaptive"])
@pytest.mark.parametrize("content", ["linear", "nonlinear"])
@pytest.mark.parametrize("attention", ["cross", "global"])
@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_matches_numpy_reference(rng, lam_encoding, content, attention, upsample):
    block = MixBlock(
        lam_encoding=lam_encoding,
        content=content,
        attention=attention,
        upsample=upsample,
        gamma=0.7,
    )
    za, zb = _features(rng, c=4)
    lam = np.array([0.3, 0.8], "float32")
    mask = block(za, zb, lam, image_size=(4, 4), training=False)
    _randomize(block, rng)
    mask = _np(block(za, zb, lam, image_size=(4, 4), training=False))
    expected = reference_mask(block, za, zb, lam, (4, 4))
    assert mask.shape == (2, 4, 4, 1)
    np.testing.assert_allclose(mask, expected, atol=1e-5)


def test_attention_softmax_axis_and_scale_are_distinguished(rng):
    """A 2x2 feature map with chosen weights: the wrong axis or scale gives another mask."""
    block = MixBlock(preset="automix", lam_encoding="none", upsample="nearest")
    za, zb = _features(rng, c=8)  # inter channels 4: scale sqrt(4) = 2, not sqrt(8)
    block(za, zb, 0.5, image_size=(2, 2))
    _randomize(block, rng, std=1.0)
    mask = _np(block(za, zb, 0.5, image_size=(2, 2)))
    right = reference_mask(block, za, zb, 0.5, (2, 2))
    np.testing.assert_allclose(mask, right, atol=1e-5)
    wrong_axis = reference_mask(block, za, zb, 0.5, (2, 2), softmax_axis=1)
    wrong_scale = reference_mask(block, za, zb, 0.5, (2, 2), scale=math.sqrt(8))
    no_scale = reference_mask(block, za, zb, 0.5, (2, 2), scale=1.0)
    for wrong in (wrong_axis, wrong_scale, no_scale):
        assert np.max(np.abs(mask - wrong)) > 1e-3


def test_value_comes_from_the_b_side_by_hand():
    """With W_v picking the appended lam channel, every logit is the z_b channel 1 - lam."""
    block = MixBlock(preset="automix")  # concat encoding, linear content
    za = np.zeros((2, 2, 2, 2), "float32")
    zb = np.zeros((2, 2, 2, 2), "float32")
    lam = np.array([0.25, 0.9], "float32")
    block(za, zb, lam, image_size=(4, 4))
    block.value_conv.kernel.assign(np.array([0.0, 0.0, 1.0], "float32").reshape(1, 1, 3, 1))
    mask = _np(block(za, zb, lam, image_size=(4, 4)))
    # P has rows summing to 1, so P v = 1 - lam at every position; s_lam = 1 - sigmoid(1 - lam).
    expected = 1.0 - _sigmoid(1.0 - lam.astype("float64"))
    np.testing.assert_allclose(mask, np.broadcast_to(expected[:, None, None, None], mask.shape), atol=1e-6)


def test_adaptive_encoding_by_hand():
    """z_b = 1, W_v = [1, 0]: v = (1 + gamma (1 - lam)); s_lam = 1 - sigmoid(v)."""
    block = MixBlock(preset="automix", lam_encoding="adaptive", gamma="learned")
    z = np.ones((2, 2, 2, 2), "float32")
    lam = np.array([0.2, 0.6], "float32")
    block(z, z, lam, image_size=(2, 2))
    assert float(_np(block.gamma_weight)) == 0.0  # initialised to 0
    block.value_conv.kernel.assign(np.array([1.0, 0.0], "float32").reshape(1, 1, 2, 1))
    block.gamma_weight.assign(0.5)
    mask = _np(block(z, z, lam, image_size=(2, 2)))
    expected = 1.0 - _sigmoid(1.0 + 0.5 * (1.0 - lam.astype("float64")))
    np.testing.assert_allclose(mask[:, 0, 0, 0], expected, atol=1e-6)
    # gamma is clamped to [0, 1] where used, even if the variable is outside.
    block.gamma_weight.assign(1.7)
    mask = _np(block(z, z, lam, image_size=(2, 2)))
    np.testing.assert_allclose(mask[:, 0, 0, 0], 1.0 - _sigmoid(2.0 - lam), atol=1e-6)


def test_rescale_lambda_by_hand():
    # k = 0.25: k' = 1.25, lam = 0.3:
    #   4/3 * 0.027 = 0.036, 2 * 0.09 = 0.18, 1.25 * 0.3 = 0.375
    #   lam' = (0.036 - 0.18 + 0.375) / (1.25 - 2/3) = 0.231 / (7/12) = 0.396
    np.testing.assert_allclose(float(_np(rescale_lambda(0.3, 0.25))), 0.396, atol=1e-6)
    # k = 0: k' = 1, lam' = (0.036 - 0.18 + 0.3) / (1/3) = 0.468
    np.testing.assert_allclose(float(_np(rescale_lambda(0.3, 0.0))), 0.468, atol=1e-6)
    # 1 - lam: lam'(0.7) = 1 - 0.396 (the rescaling is symmetric about 1/2)
    np.testing.assert_allclose(float(_np(rescale_lambda(0.7, 0.25))), 0.604, atol=1e-6)
    for k in (0.0, 0.25, 3.0, 10.0):
        out = _np(rescale_lambda(np.array([0.0, 0.5, 1.0], "float32"), k))
        np.testing.assert_allclose(out, [0.0, 0.5, 1.0], atol=1e-6)
        assert out.dtype == np.float64 and out.shape == (3,)


def test_adaptive_encoding_with_rescaled_lam_by_hand():
    """gamma = 1, k = 0.25, z_b = 1, W_v = [1, 0]: v = 1 + (1 - lam'), lam' as above."""
    block = MixBlock(preset="amix_official", content="linear", attention="cross",
                     upsample="nearest")
    z = np.ones((2, 2, 2, 2), "float32")
    lam = np.array([0.3, 0.5], "float32")
    block(z, z, lam, image_size=(2, 2))
    block.value_conv.kernel.assign(np.array([1.0, 0.0], "float32").reshape(1, 1, 2, 1))
    mask = _np(block(z, z, lam, image_size=(2, 2)))
    # lam'(0.3) = 0.396 -> v = 1.604; lam'(0.5) = 0.5 -> v = 1.5
    np.testing.assert_allclose(mask[:, 0, 0, 0], 1.0 - _sigmoid(np.array([1.604, 1.5])), atol=1e-6)
    plain = MixBlock(preset="amix_official", content="linear", attention="cross",
                     upsample="nearest", lam_rescale_k=None)
    plain(z, z, lam, image_size=(2, 2))
    plain.set_weights(block.get_weights())
    unscaled = _np(plain(z, z, lam, image_size=(2, 2)))
    np.testing.assert_allclose(unscaled[0, 0, 0, 0], 1.0 - _sigmoid(1.7), atol=1e-6)


def test_no_lam_encoding_ignores_lam(rng):
    block = MixBlock(preset="amix", lam_encoding="none")
    za, zb = _features(rng)
    a = _np(block(za, zb, 0.1, image_size=(4, 4)))
    b = _np(block(za, zb, 0.9, image_size=(4, 4)))
    np.testing.assert_array_equal(a, b)


def test_upsample_logits_then_sigmoid(rng):
    """Bilinear: the layer computes sigmoid(resize(x)), matching the reference."""
    block = MixBlock(preset="amix", upsample="bilinear")
    za, zb = _features(rng)
    block(za, zb, 0.5, image_size=(8, 8))
    _randomize(block, rng, std=0.5)
    mask = _np(block(za, zb, 0.5, image_size=(8, 8), training=False))
    logits = reference_logits(block, za, zb, 0.5)
    np.testing.assert_allclose(mask, 1.0 - _sigmoid(_resize_bilinear(logits, (8, 8))), atol=1e-5)


def test_upsample_then_sigmoid_by_hand():
    """A 2x2 map with chosen weights: P ~ identity, logits [[-4, 4], [4, -4]].

    Half-pixel bilinear 2 -> 4 uses the row weights W below, so the upsampled
    logits are W L W^T; sigmoid-then-upsample would give other values (e.g.
    0.741 instead of 0.881 at (0, 1)).
    """
    block = MixBlock(preset="automix", lam_encoding="none", upsample="bilinear")
    z = np.zeros((1, 2, 2, 8), "float32")
    for j in range(4):
        z[0, j // 2, j % 2, j] = 1.0  # one-hot position code
    block(z, z, 0.5, image_size=(4, 4))
    projection = np.zeros((8, 4), "float32")
    projection[:4, :4] = 10.0 * np.eye(4)  # q_i . k_j / sqrt(4) = 50 delta_ij
    block.query_conv.kernel.assign(projection.reshape(1, 1, 8, 4))
    value = np.array([-4, 4, 4, -4, 0, 0, 0, 0], "float32").reshape(1, 1, 8, 1)
    block.value_conv.kernel.assign(value)
    mask = _np(block(z, z, 0.5, image_size=(4, 4)))[0, :, :, 0]
    logits = np.array([[-4.0, 4.0], [4.0, -4.0]])
    w = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    expected = 1.0 - _sigmoid(w @ logits @ w.T)
    np.testing.assert_allclose(mask, expected, atol=1e-5)
    np.testing.assert_allclose(mask[0, 1], 1.0 - _sigmoid(-2.0), atol=1e-5)  # 0.8808
    wrong = 1.0 - w @ _sigmoid(logits) @ w.T
    assert abs(wrong[0, 1] - mask[0, 1]) > 0.1


def test_nearest_upsampling_replicates_blocks(rng):
    block = MixBlock(preset="automix")
    za, zb = _features(rng)
    block(za, zb, 0.5, image_size=(8, 8))
    _randomize(block, rng)
    mask = _np(block(za, zb, 0.5, image_size=(8, 8)))
    np.testing.assert_array_equal(mask[:, :4, :4], np.broadcast_to(mask[:, :1, :1], (2, 4, 4, 1)))
    assert not np.allclose(mask[:, 0, 0], mask[:, 0, 4])


# -------------------------------------------------------------- lam adjusting


def test_adjust_lambda_by_hand():
    s = np.array([0.2, 0.4, 0.6, 0.8], "float32").reshape(1, 2, 2, 1)
    mask = np.concatenate([s, s])  # mean 0.5 each
    lam = np.array([0.25, 0.75], "float32")
    out = _np(MixBlock().adjust_lambda(mask, lam))
    # mu > lam: s <- s * lam / mu = s / 2.
    np.testing.assert_allclose(out[0].ravel(), [0.1, 0.2, 0.3, 0.4], atol=1e-7)
    # mu < lam: s_{1-lam} <- (1 - s) * 0.25 / 0.5, s_lam = 1 - that.
    np.testing.assert_allclose(out[1].ravel(), [0.6, 0.7, 0.8, 0.9], atol=1e-7)
    # mu == lam: unchanged.
    np.testing.assert_allclose(_np(adjust_lambda(mask, 0.5)), mask, atol=0)


def test_adjust_lambda_mean_is_lam_for_random_masks(rng):
    for _ in range(5):
        mask = rng.uniform(size=(6, 5, 7, 1)).astype("float32") ** rng.uniform(0.2, 4)
        lam = rng.uniform(size=(6,)).astype("float32")
        lam[0], lam[1] = 0.0, 1.0
        out = _np(adjust_lambda(mask, lam))
        np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), lam, atol=2e-6)
        assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-7
        mu = mask.reshape(6, -1).mean(1)
        # each sample used the right branch
        for b in range(6):
            if mu[b] > lam[b]:
                np.testing.assert_allclose(out[b], mask[b] * lam[b] / mu[b], atol=1e-6)
            else:
                np.testing.assert_allclose(
                    1 - out[b], (1 - mask[b]) * (1 - lam[b]) / (1 - mu[b]), atol=1e-6
                )


def test_mask_for_encoder_probability_and_margin(rng):
    mask = rng.uniform(size=(3, 4, 4, 1)).astype("float32")
    lam = np.array([0.05, 0.5, 0.95], "float32")
    always = MixBlock(preset="amix", lam_adjust_prob=1.0, lam_margin=0.08)
    out = _np(always.mask_for_encoder(mask, lam))
    np.testing.assert_allclose(out[0], 0.05, atol=1e-7)  # plain MixUp below the margin
    np.testing.assert_allclose(out[2], 0.95, atol=1e-7)  # and above 1 - margin
    np.testing.assert_allclose(out[1].mean(), 0.5, atol=1e-6)  # adjusted
    never = MixBlock(preset="amix", lam_adjust_prob=0.0, lam_margin=0.0)
    np.testing.assert_allclose(_np(never.mask_for_encoder(mask, lam)), mask, atol=0)
    sometimes = MixBlock(preset="amix", lam_adjust_prob=0.5, seed=4)
    adjusted = np.mean(mask.reshape(3, -1), 1)
    outcomes = set()
    for _ in range(24):
        out = _np(sometimes.mask_for_encoder(mask, lam))
        means = out.reshape(3, -1).mean(1)
        if np.allclose(means, lam, atol=1e-6):
            outcomes.add("adjusted")
        else:
            np.testing.assert_allclose(means, adjusted, atol=1e-6)  # whole batch untouched
            outcomes.add("kept")
    assert outcomes == {"adjusted", "kept"}


def test_mask_for_encoder_repeats_with_seed(rng):
    mask = rng.uniform(size=(2, 4, 4, 1)).astype("float32")
    runs = []
    for _ in range(2):
        block = MixBlock(preset="amix", lam_adjust_prob=0.5, seed=11)
        runs.append([_np(block.mask_for_encoder(mask, 0.3)).sum() for _ in range(8)])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_step_methods_equal_the_separate_calls_and_check_lam_once(rng, monkeypatch):
    """`mask_and_loss` / `encoder_mask` (what the models' steps call) give
    the same tensors as `call` followed by `mask_loss` / `mask_for_encoder`,
    validating `lam` once per mask instead of twice."""
    from keras_amix.layers import mix_block as mb

    za, zb = _features(rng, batch=3, c=4)
    block = MixBlock(preset="amix", lam_adjust_prob=1.0, lam_margin=0.08)
    block.build(za.shape)
    _randomize(block, rng)
    lam = np.array([0.05, 0.4, 0.7], "float32")
    mask = block(za, zb, lam, image_size=(8, 8), training=False)
    expected_loss = block.mask_loss(mask, lam)
    expected_encoder = block.mask_for_encoder(mask, lam)

    checked = []
    original = mb._check_lam
    monkeypatch.setattr(mb, "_check_lam", lambda *a, **k: (checked.append(a[1]),
                                                            original(*a, **k)))
    got_mask, got_loss = block.mask_and_loss(za, zb, lam, (8, 8), training=False)
    assert checked == ["call"]
    np.testing.assert_array_equal(_np(got_mask), _np(mask))
    np.testing.assert_array_equal(_np(got_loss), _np(expected_loss))
    checked.clear()
    got_encoder = block.encoder_mask(za, zb, lam, (8, 8), training=False)
    assert checked == ["call"]
    np.testing.assert_array_equal(_np(got_encoder), _np(expected_encoder))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]; received lam=\[1.5"):
        block.mask_and_loss(za, zb, np.array([1.5, 0.2, 0.3], "float32"), (8, 8))


# -------------------------------------------------------------- mask losses


def _two_masks():
    m1 = np.array([0, 1, 0, 1], "float32").reshape(1, 2, 2, 1)  # mean .5, var .25
    m2 = np.ones((1, 2, 2, 1), "float32")  # mean 1, var 0
    return np.concatenate([m1, m2])  # batch mean .75


def test_mask_loss_by_hand():
    mask = _two_masks()
    amix = MixBlock(preset="amix")
    # L_mean = max(|0.75 - 0.3| - 0.1, 0) = 0.35; L_var = 0.125; 0.1 (0.35 - 2 * 0.125)
    np.testing.assert_allclose(float(_np(amix.mask_loss(mask, 0.3))), 0.01, atol=1e-7)
    automix = MixBlock(preset="automix")
    np.testing.assert_allclose(float(_np(automix.mask_loss(mask, 0.3))), 0.035, atol=1e-7)
    paper_sign = MixBlock(preset="amix", var_weight=-1.0)
    np.testing.assert_allclose(float(_np(paper_sign.mask_loss(mask, 0.3))), 0.0475, atol=1e-7)
    # batch-centred L_var: pixels 0,1,0,1,1,1,1,1 around 0.75:
    # (2 * 0.5625 + 6 * 0.0625) / 8 = 0.1875 (= 0.125 + variance of the means 0.0625);
    # 0.1 (0.35 - 2 * 0.1875) = -0.0025
    batch_var = MixBlock(preset="amix", var_center="batch")
    np.testing.assert_allclose(float(_np(batch_var.mask_loss(mask, 0.3))), -0.0025, atol=1e-7)
    # inside the margin the mean term vanishes: |0.75 - 0.7| < 0.1
    np.testing.assert_allclose(float(_np(automix.mask_loss(mask, 0.7))), 0.0, atol=0)
    # per-sample lam: batch reduction compares .75 with mean(lam) = .5 -> 0.15;
    # sample reduction: mean(max(0 - .1, 0), max(.5 - .1, 0)) = 0.2.
    lam = np.array([0.5, 0.5], "float32")
    np.testing.assert_allclose(float(_np(automix.mask_loss(mask, lam))), 0.015, atol=1e-7)
    sample = MixBlock(preset="automix", mean_reduction="sample")
    np.testing.assert_allclose(float(_np(sample.mask_loss(mask, lam))), 0.02, atol=1e-7)


def test_mask_statistics():
    stats = mask_statistics(_two_masks())
    np.testing.assert_allclose(float(_np(stats["mask_mean"])), 0.75, atol=1e-7)
    np.testing.assert_allclose(float(_np(stats["mask_std"])), 0.25, atol=1e-7)  # (.5 + 0) / 2
    const = mask_statistics(np.full((2, 4, 4, 1), 0.3, "float32"))
    assert float(_np(const["mask_std"])) < 1e-6


# ---------------------------------------------------------- gradients, gamma


@pytest.mark.parametrize("preset", ["amix", "automix"])
def test_gradients_reach_every_weight(rng, preset):
    block = MixBlock(preset=preset, dropout=0.0)
    za, zb = _features(rng, c=4)
    lam = np.array([0.3, 0.7], "float32")
    block(za, zb, lam, image_size=(4, 4))
    target = ops.convert_to_tensor(rng.uniform(size=(2, 4, 4, 1)).astype("float32"))

    def loss_fn(mask):
        return ops.sum(ops.square(mask - target)) + block.mask_loss(mask, lam)

    grads = gradients(block, loss_fn, za, zb, lam, image_size=(4, 4), training=True)
    for path, g in grads.items():
        if path.endswith("key/bias"):
            # A key bias adds q_i . b to a whole row of scores: softmax ignores it.
            continue
        assert g is not None and np.any(g != 0), path
    if preset == "amix":
        assert np.any(grads[block.gamma_weight.path] != 0)


def test_gamma_constraint_keeps_unit_interval(rng):
    block = MixBlock(preset="amix")
    za, zb = _features(rng)
    block(za, zb, 0.5, image_size=(4, 4))
    opt = keras.optimizers.SGD(learning_rate=1.0)
    opt.apply_gradients([(ops.convert_to_tensor(-5.0), block.gamma_weight)])
    assert float(_np(block.gamma_weight)) == 1.0
    opt.apply_gradients([(ops.convert_to_tensor(7.0), block.gamma_weight)])
    assert float(_np(block.gamma_weight)) == 0.0
    opt.apply_gradients([(ops.convert_to_tensor(-0.25), block.gamma_weight)])
    np.testing.assert_allclose(float(_np(block.gamma_weight)), 0.25)


def test_mask_for_encoder_stops_gradients(rng):
    block = MixBlock(preset="amix", dropout=0.0)
    za, zb = _features(rng)
    block(za, zb, 0.4, image_size=(4, 4))
    grads = gradients(
        block,
        lambda m: ops.sum(block.mask_for_encoder(m, 0.4) * 3.0),
        za, zb, 0.4, image_size=(4, 4), training=True,
    )
    assert all(g is None or not np.any(g) for g in grads.values())


# ------------------------------------------------------ switches, serialization


def _switch_cases():
    """Each switch value on a preset where it changes something, plus both presets."""
    cases = [(name, None, None) for name in PRESETS]
    for switch, value in ALL_SWITCH_CASES:
        preset = "amix" if PRESETS["amix"][switch] != value else "automix"
        if PRESETS[preset][switch] != value or switch == "gamma":
            cases.append((preset, switch, value))
    return cases


@pytest.mark.parametrize("preset,switch,value", _switch_cases())
def test_every_switch_builds_runs_and_serializes(rng, preset, switch, value):
    kwargs = {} if switch is None else {switch: value}
    if switch == "gamma":
        kwargs["lam_encoding"] = "adaptive"
    block = MixBlock(preset=preset, **kwargs)
    if switch is not None:
        assert block.get_config()[switch] == value
    za, zb = _features(rng)
    lam = np.array([0.2, 0.9], "float32")
    eager = _np(block(za, zb, lam, image_size=(4, 4), training=True))
    assert eager.shape == (2, 4, 4, 1) and np.all((eager >= 0) & (eager <= 1))
    # symbolic call
    fa = keras.Input((2, 2, 4))
    fb = keras.Input((2, 2, 4))
    lam_in = keras.Input(())
    out = block(fa, fb, lam_in, image_size=(4, 4))
    assert tuple(out.shape) == (None, 4, 4, 1)
    model = keras.Model([fa, fb, lam_in], out)
    np.testing.assert_allclose(
        _np(model([za, zb, lam], training=False)),
        _np(block(za, zb, lam, image_size=(4, 4), training=False)),
        atol=1e-6,
    )
    # config round trip
    clone = keras.layers.deserialize(keras.layers.serialize(block))
    assert clone.get_config() == block.get_config()
    clone(za, zb, lam, image_size=(4, 4))
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(
        _np(clone(za, zb, lam, image_size=(4, 4), training=False)),
        _np(block(za, zb, lam, image_size=(4, 4), training=False)),
        atol=1e-6,
    )
    assert np.isfinite(float(_np(block.mask_loss(eager, lam))))
    enc = _np(block.mask_for_encoder(eager, lam))
    assert enc.shape == eager.shape


@pytest.mark.parametrize("preset", ["amix", "automix", "amix_official"])
def test_saved_model_round_trip(rng, tmp_path, preset):
    block = MixBlock(preset=preset, seed=3, in_channels=4)
    fa = keras.Input((2, 2, 4))
    fb = keras.Input((2, 2, 4))
    lam_in = keras.Input(())
    model = keras.Model([fa, fb, lam_in], block(fa, fb, lam_in, image_size=(8, 8)))
    _randomize(block, rng)
    za, zb = _features(rng)
    lam = np.array([0.35, 0.6], "float32")
    path = str(tmp_path / "mix_block.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    layer = [l for l in restored.layers if isinstance(l, MixBlock)][0]
    assert layer.get_config() == block.get_config()
    np.testing.assert_allclose(
        _np(restored([za, zb, lam], training=False)), _np(model([za, zb, lam], training=False)), atol=1e-6
    )


def test_presets_and_overrides():
    amix = MixBlock(preset="amix").get_config()
    assert (amix["lam_encoding"], amix["content"], amix["attention"], amix["upsample"]) == (
        "adaptive", "nonlinear", "global", "bilinear",
    )
    assert (amix["mask_loss"], amix["lam_adjust_prob"], amix["dropout"]) == ("mean+var", 1.0, 0.1)
    auto = MixBlock(preset="automix").get_config()
    assert (auto["lam_encoding"], auto["content"], auto["attention"], auto["upsample"]) == (
        "concat", "linear", "cross", "nearest",
    )
    assert (auto["mask_loss"], auto["lam_adjust_prob"]) == ("mean", 0.0)
    official = MixBlock(preset="amix", activation="elu", dropout=0.0, gamma=1.0, lam_margin=0.08,
                        lam_adjust_prob=0.25)
    cfg = official.get_config()
    assert (cfg["activation"], cfg["dropout"], cfg["gamma"], cfg["lam_margin"]) == ("elu", 0.0, 1.0, 0.08)
    for name in ("amix", "automix"):  # the paper presets keep the behaviour from before
        cfg = MixBlock(preset=name).get_config()
        assert (cfg["lam_rescale_k"], cfg["value_bias"], cfg["var_center"]) == (None, True, "sample")
        assert (cfg["norm_epsilon"], cfg["norm_momentum"]) == (1e-3, 0.99)


def test_every_preset_sets_every_switch():
    for name, preset in PRESETS.items():
        assert tuple(preset) == SWITCHES, name


def test_official_presets_hold_the_official_values():
    auto = MixBlock.from_preset("automix_official", name="a").get_config()
    assert auto == MixBlock(preset="automix_official", name="a").get_config()
    assert {k: auto[k] for k in ("lam_encoding", "content", "upsample", "attention", "mask_loss",
                                 "mean_margin", "mask_loss_weight", "lam_margin",
                                 "lam_adjust_prob", "norm_epsilon", "norm_momentum",
                                 "lam_rescale_k", "value_bias")} == dict(
        lam_encoding="none", content="linear", upsample="nearest", attention="cross",
        mask_loss="mean", mean_margin=0.1, mask_loss_weight=0.1, lam_margin=0.08,
        lam_adjust_prob=0.0, norm_epsilon=1e-5, norm_momentum=0.9, lam_rescale_k=None,
        value_bias=True,
    )
    amix = MixBlock.from_preset("amix_official").get_config()
    assert {k: amix[k] for k in ("lam_encoding", "gamma", "lam_rescale_k", "content",
                                 "activation", "dropout", "attention", "upsample", "mask_loss",
                                 "var_center", "var_weight", "mean_margin", "lam_margin",
                                 "lam_adjust_prob", "value_bias", "norm_epsilon",
                                 "norm_momentum")} == dict(
        lam_encoding="adaptive", gamma=1.0, lam_rescale_k=0.25, content="nonlinear",
        activation="elu", dropout=0.0, attention="global", upsample="bilinear",
        mask_loss="mean+var", var_center="batch", var_weight=2.0, mean_margin=0.1,
        lam_margin=0.08, lam_adjust_prob=0.25, value_bias=False, norm_epsilon=1e-5,
        norm_momentum=0.9,
    )
    overridden = MixBlock.from_preset("amix_official", lam_adjust_prob=0.0, name="mb")
    assert overridden.lam_adjust_prob == 0.0 and overridden.name == "mb"
    assert overridden.get_config()["preset"] == "amix_official"


@pytest.mark.parametrize("preset", ["automix_official", "amix_official"])
def test_official_preset_builds_runs_and_round_trips(rng, preset):
    block = MixBlock.from_preset(preset, seed=5)
    za, zb = _features(rng, h=4, w=4, c=8)
    lam = np.array([0.3, 0.8], "float32")
    mask = _np(block(za, zb, lam, image_size=(16, 16), training=True))
    assert mask.shape == (2, 16, 16, 1) and np.all((mask >= 0) & (mask <= 1))
    _randomize(block, rng)
    mask = _np(block(za, zb, lam, image_size=(16, 16), training=False))
    np.testing.assert_allclose(mask, reference_mask(block, za, zb, lam, (16, 16)), atol=1e-5)
    assert np.isfinite(float(_np(block.mask_loss(mask, lam))))
    clone = MixBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    clone(za, zb, lam, image_size=(16, 16))
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(
        _np(clone(za, zb, lam, image_size=(16, 16), training=False)), mask, atol=1e-6
    )


def test_old_config_without_new_switches_loads_with_todays_behaviour():
    new = ("lam_rescale_k", "value_bias", "norm_epsilon", "norm_momentum", "var_center")
    for preset in ("amix", "automix"):
        config = MixBlock(preset=preset, dropout=0.0).get_config()
        for name in new:
            del config[name]
        block = MixBlock.from_config(config)
        assert (block.lam_rescale_k, block.value_bias, block.var_center) == (None, True, "sample")
        assert (block.norm_epsilon, block.norm_momentum) == (1e-3, 0.99)
        assert block.dropout == 0.0


@pytest.mark.parametrize("content", ["linear", "nonlinear"])
def test_value_bias_false_leaves_no_value_bias(rng, content):
    za, zb = _features(rng)
    with_bias = MixBlock(preset="amix", content=content)
    without = MixBlock(preset="amix", content=content, value_bias=False)
    for block in (with_bias, without):
        block(za, zb, 0.5, image_size=(4, 4))
    convs = ("value",) if content == "linear" else ("value_1", "value_2")
    paths = {v.path.split("/", 1)[1] for v in without.weights}
    assert not any(f"{conv}/bias" in paths for conv in convs), paths
    assert {f"{conv}/bias" for conv in convs} <= {v.path.split("/", 1)[1] for v in with_bias.weights}
    assert {"query/bias", "key/bias"} <= paths  # the attention convs keep theirs
    assert len(without.weights) == len(with_bias.weights) - len(convs)
    if content == "nonlinear":
        assert without.value_conv1.bias is None and without.value_conv2.bias is None


def test_norm_epsilon_and_momentum_reach_batch_norm(rng):
    block = MixBlock(preset="amix", norm_epsilon=1e-5, norm_momentum=0.9, dropout=0.0)
    za, zb = _features(rng)
    block(za, zb, 0.5, image_size=(4, 4))
    assert block.value_norm.epsilon == 1e-5 and block.value_norm.momentum == 0.9
    _randomize(block, rng)
    block.value_norm.moving_mean.assign(np.zeros_like(_np(block.value_norm.moving_mean)))
    # lam = 0.5, learned gamma 0: z_b unchanged; one training call moves the moving mean
    # from 0 by (1 - momentum) * batch mean: 0.1 of it (0.01 with Keras' default 0.99).
    hidden = _conv1x1(zb.astype("float64"), block.value_conv1)
    block.gamma_weight.assign(0.0)
    block(za, zb, 0.5, image_size=(4, 4), training=True)
    np.testing.assert_allclose(
        _np(block.value_norm.moving_mean), 0.1 * hidden.mean(axis=(0, 1, 2)), atol=1e-5
    )
    # the inference path uses the epsilon (checked against the numpy reference)
    block.value_norm.moving_variance.assign(np.full_like(_np(block.value_norm.moving_variance), 1e-4))
    mask = _np(block(za, zb, 0.5, image_size=(4, 4), training=False))
    np.testing.assert_allclose(mask, reference_mask(block, za, zb, 0.5, (4, 4)), atol=1e-5)


# -------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(preset="mixup"), ["preset", "mixup", "amix"]),
        (dict(lam_encoding="add"), ["lam_encoding", "add", "adaptive"]),
        (dict(content="mlp"), ["content", "mlp", "nonlinear"]),
        (dict(attention="self"), ["attention", "self", "global"]),
        (dict(upsample="bicubic"), ["upsample", "bicubic", "bilinear"]),
        (dict(mask_loss="var"), ["mask_loss", "var", "mean+var"]),
        (dict(activation="gelu"), ["activation", "gelu", "elu"]),
        (dict(gamma=1.5), ["gamma", "1.5"]),
        (dict(gamma="fixed"), ["gamma", "fixed"]),
        (dict(dropout=1.0), ["dropout", "1.0"]),
        (dict(lam_adjust_prob=2), ["lam_adjust_prob", "2"]),
        (dict(lam_margin=0.6), ["lam_margin", "0.6"]),
        (dict(in_channels=0), ["in_channels", "0"]),
        (dict(lam_rescale_k=-0.5), ["lam_rescale_k", "-0.5", "[0, 10]"]),
        (dict(lam_rescale_k=11.0), ["lam_rescale_k", "11.0", "[0, 10]"]),
        (dict(lam_rescale_k="0.25"), ["lam_rescale_k", "'0.25'", "None"]),
        (dict(lam_rescale_k=True), ["lam_rescale_k", "True"]),
        (dict(lam_rescale_k=0.25, lam_encoding="concat"),
         ["lam_rescale_k", "0.25", "adaptive", "concat"]),
        (dict(preset="amix_official", lam_encoding="none"), ["lam_rescale_k", "adaptive", "none"]),
        (dict(value_bias="no"), ["value_bias", "'no'", "True or False"]),
        (dict(value_bias=0), ["value_bias", "0", "True or False"]),
        (dict(norm_epsilon=0.0), ["norm_epsilon", "0.0", "> 0"]),
        (dict(norm_epsilon=float("nan")), ["norm_epsilon", "nan"]),
        (dict(norm_momentum=1.0), ["norm_momentum", "1.0", "[0, 1)"]),
        (dict(norm_momentum=-0.1), ["norm_momentum", "-0.1", "[0, 1)"]),
        (dict(var_center="pixel"), ["var_center", "pixel", "batch", "sample"]),
        (dict(preset="samix"), ["preset", "samix", "amix_official"]),
    ],
)
def test_invalid_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        MixBlock(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_from_preset_validates_like_the_constructor():
    with pytest.raises(ValueError, match=r"preset.*automix_official.*preset='paper'"):
        MixBlock.from_preset("paper")
    with pytest.raises(ValueError, match=r"norm_momentum.*\[0, 1\).*norm_momentum=1\.5"):
        MixBlock.from_preset("amix_official", norm_momentum=1.5)
    with pytest.raises(ValueError, match="preset='amix'"):
        MixBlock.from_preset("amix_official", preset="amix")


def test_invalid_call_inputs(rng):
    za, zb = _features(rng, c=4)
    with pytest.raises(ValueError, match="in_channels=8"):
        MixBlock(in_channels=8)(za, zb, 0.5, image_size=(4, 4))
    block = MixBlock()
    with pytest.raises(ValueError, match="lam"):
        block(za, zb, 1.5, image_size=(4, 4))
    with pytest.raises(ValueError, match="lam"):
        block(za, zb, np.array([0.5, -0.1], "float32"), image_size=(4, 4))
    with pytest.raises(ValueError, match="rank 4"):
        block(za[0], zb[0], 0.5, image_size=(4, 4))
    with pytest.raises(ValueError, match="image_size"):
        block(za, zb, 0.5, image_size=None)
    with pytest.raises(ValueError, match="must have the same"):
        block(za, zb[..., :2], 0.5, image_size=(4, 4))
    with pytest.raises(ValueError, match="lam"):
        block.adjust_lambda(np.full((2, 4, 4, 1), 0.5, "float32"), 1.2)


# --------------------------------------------- precision, dropout, seeding


def test_mixed_precision_mask_is_float32_and_finite(rng):
    policy = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        block = MixBlock(preset="amix")
        za, zb = _features(rng, h=4, w=4, c=8, scale=30.0)
        block(za, zb, 0.5, image_size=(8, 8))
        _randomize(block, rng, std=2.0)
        mask = block(za, zb, np.array([0.3, 0.7], "float32"), image_size=(8, 8), training=True)
        assert keras.backend.standardize_dtype(mask.dtype) == "float32"
        values = _np(mask)
        assert np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1
        assert np.isfinite(float(_np(block.mask_loss(mask, 0.3))))
        adjusted = _np(block.mask_for_encoder(mask, np.array([0.3, 0.7], "float32")))
        np.testing.assert_allclose(adjusted.reshape(2, -1).mean(1), [0.3, 0.7], atol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_dropout_only_in_training(rng):
    block = MixBlock(preset="amix", dropout=0.5, seed=1)
    za, zb = _features(rng, batch=4)
    block(za, zb, 0.5, image_size=(4, 4))
    _randomize(block, rng)
    inference = [_np(block(za, zb, 0.5, image_size=(4, 4), training=False)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    training = [_np(block(za, zb, 0.5, image_size=(4, 4), training=True)) for _ in range(2)]
    assert np.max(np.abs(training[0] - training[1])) > 1e-4
    no_dropout = MixBlock(preset="amix", dropout=0.0)
    no_dropout(za, zb, 0.5, image_size=(4, 4))
    no_dropout.set_weights(block.get_weights())
    runs = [_np(no_dropout(za, zb, 0.5, image_size=(4, 4), training=True)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_fixed_seed_repeats(rng):
    za, zb = _features(rng)
    outs = []
    for _ in range(2):
        block = MixBlock(preset="amix", dropout=0.5, seed=7)
        outs.append(_np(block(za, zb, 0.4, image_size=(4, 4), training=True)))
        outs[-1] = (outs[-1], [_np(w) for w in block.get_weights()])
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------- compiled fit


class MaskModel(keras.Model):
    """Trains a MixBlock towards a target mask inside the compiled train step."""

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, inputs, training=None):
        za, zb, lam = inputs
        mask = self.block(za, zb, lam, image_size=(4, 4), training=training)
        self.add_loss(self.block.mask_loss(mask, lam))
        encoder_mask = self.block.mask_for_encoder(mask, lam)  # random draw in-graph
        return mask + 0.0 * encoder_mask


@pytest.mark.training
def test_short_fit_compiled(rng):
    block = MixBlock(preset="amix", lam_adjust_prob=0.5, lam_margin=0.08, seed=2)
    model = MaskModel(block)
    za, zb = _features(rng, batch=8)
    lam = rng.uniform(size=(8,)).astype("float32")
    target = (rng.uniform(size=(8, 4, 4, 1)) > 0.5).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = model.fit((za, zb, lam), target, batch_size=4, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    gamma = float(_np(block.gamma_weight))
    assert 0.0 <= gamma <= 1.0


def test_every_switch_is_a_keyword_argument_defaulting_to_the_preset():
    import inspect

    from keras_amix.layers.mix_block import FROM_PRESET, PRESETS, SWITCHES

    params = inspect.signature(MixBlock).parameters
    switches = [name for name, p in params.items() if p.default is FROM_PRESET]
    assert switches == list(SWITCHES)
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in switches)
    for preset, values in PRESETS.items():
        config = MixBlock(preset).get_config()
        assert {name: config[name] for name in SWITCHES} == values, preset
    # An explicit switch overrides the preset; a misspelt one is refused by Keras.
    assert MixBlock("amix", attention="cross").get_config()["attention"] == "cross"
    with pytest.raises(ValueError, match="atention"):
        MixBlock("amix", atention="cross")
