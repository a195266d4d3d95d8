"""Hand-computed checks of keras_amix.losses."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_amix import losses


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _log_softmax(x):
    x = np.asarray(x, "float64")
    return x - np.log(np.sum(np.exp(x - x.max(-1, keepdims=True)), -1, keepdims=True)) - x.max(
        -1, keepdims=True
    )


# -------------------------------------------------------------- classification


def test_soft_target_cross_entropy_by_hand():
    labels = np.array([[0.25, 0.75], [1.0, 0.0]], "float32")
    logits = np.array([[0.0, math.log(3.0)], [0.0, 0.0]], "float32")  # softmax (.25, .75), (.5, .5)
    out = _np(losses.soft_target_cross_entropy(labels, logits))
    expected = [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2.0)]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_soft_target_cross_entropy_is_stable_for_large_logits():
    out = _np(losses.soft_target_cross_entropy([[0.0, 1.0]], [[1000.0, 0.0]]))
    np.testing.assert_allclose(out, [1000.0], rtol=1e-6)


def test_mixup_cross_entropy_by_hand_and_edges(rng):
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], "float32")
    ya = np.eye(3, dtype="float32")[[2, 0]]
    yb = np.eye(3, dtype="float32")[[0, 1]]
    ls = _log_softmax(logits)
    for lam in (0.0, 0.3, 1.0):
        expected = -(lam * ls[[0, 1], [2, 0]] + (1 - lam) * ls[[0, 1], [0, 1]])
        np.testing.assert_allclose(_np(losses.mixup_cross_entropy(logits, ya, yb, lam)), expected, rtol=1e-6)
    lam = np.array([0.2, 0.9], "float32")
    expected = -(lam * ls[[0, 1], [2, 0]] + (1 - lam) * ls[[0, 1], [0, 1]])
    np.testing.assert_allclose(_np(losses.mixup_cross_entropy(logits, ya, yb, lam)), expected, rtol=1e-6)
    mixed = lam[:, None] * ya + (1 - lam[:, None]) * yb
    np.testing.assert_allclose(
        _np(losses.soft_target_cross_entropy(mixed, logits)), expected, rtol=1e-6
    )


def test_parametric_binary_cross_entropy_by_hand():
    logits = np.array([[1.0, 2.0, 3.0]], "float32")
    ya = np.array([[0, 0, 1]], "float32")  # logit 3
    yb = np.array([[1, 0, 0]], "float32")  # logit 1
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    out = float(_np(losses.parametric_binary_cross_entropy(logits, ya, yb, 0.7))[0])
    assert out == pytest.approx(-(0.7 * math.log(sig(2)) + 0.3 * math.log(sig(-2))), rel=1e-6)
    assert float(_np(losses.parametric_binary_cross_entropy(logits, ya, yb, 1.0))[0]) == pytest.approx(
        -math.log(sig(2)), rel=1e-6
    )
    assert float(_np(losses.parametric_binary_cross_entropy(logits, ya, yb, 0.0))[0]) == pytest.approx(
        -math.log(sig(-2)), rel=1e-6
    )
    # same class on both sides: the two logits coincide -> log 2
    assert float(_np(losses.parametric_binary_cross_entropy(logits, ya, ya, 0.3))[0]) == pytest.approx(
        math.log(2.0), rel=1e-6
    )


def test_pbce_is_local_and_ce_is_not(rng):
    """Changing the logit of a third class leaves pBCE unchanged but changes CE."""
    logits = rng.standard_normal((4, 5)).astype("float32")
    ya = np.eye(5, dtype="float32")[[0, 1, 2, 3]]
    yb = np.eye(5, dtype="float32")[[1, 2, 3, 0]]
    lam = rng.uniform(size=(4,)).astype("float32")
    changed = logits.copy()
    changed[:, 4] += 3.0
    p1 = _np(losses.parametric_binary_cross_entropy(logits, ya, yb, lam))
    p2 = _np(losses.parametric_binary_cross_entropy(changed, ya, yb, lam))
    np.testing.assert_allclose(p1, p2, rtol=1e-6)
    c1 = _np(losses.mixup_cross_entropy(logits, ya, yb, lam))
    c2 = _np(losses.mixup_cross_entropy(changed, ya, yb, lam))
    assert np.all(c2 > c1 + 1e-3)


def test_soft_target_loss_object_and_fit(rng):
    loss = losses.SoftTargetCrossEntropy()
    labels = np.array([[0.25, 0.75], [1.0, 0.0]], "float32")
    logits = np.array([[0.0, math.log(3.0)], [0.0, 0.0]], "float32")
    expected = np.mean([-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2.0)])
    assert float(_np(loss(labels, logits))) == pytest.approx(expected, rel=1e-6)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, losses.SoftTargetCrossEntropy)


@pytest.mark.training
def test_soft_target_loss_trains_a_model(rng):
    x = rng.standard_normal((16, 3)).astype("float32")
    y = rng.dirichlet([1.0, 1.0], size=16).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.SoftTargetCrossEntropy())
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


# ---------------------------------------------------------------- contrastive


def test_info_nce_by_hand():
    q = np.array([[1.0, 0.0]], "float32")
    k = np.array([[1.0, 0.0]], "float32")
    queue = np.array([[0.0, 1.0], [-1.0, 0.0]], "float32")
    # logits (1, 0, -1) / t with the positive at index 0
    out = float(_np(losses.info_nce(q, k, queue, temperature=1.0))[0])
    assert out == pytest.approx(math.log(math.e + 1 + math.exp(-1)) - 1, rel=1e-6)
    out = float(_np(losses.info_nce(q, k, queue, temperature=0.5))[0])
    assert out == pytest.approx(math.log(math.exp(2) + 1 + math.exp(-2)) - 2, rel=1e-6)
    # normalisation happens inside: scaled inputs give the same value
    scaled = float(_np(losses.info_nce(3 * q, 0.5 * k, 2 * queue, temperature=0.5))[0])
    assert scaled == pytest.approx(out, rel=1e-6)
    # without normalisation the scale matters
    raw = float(_np(losses.info_nce(3 * q, k, queue, temperature=0.5, normalize=False))[0])
    assert raw != pytest.approx(out, rel=1e-3)


def test_info_nce_matches_numpy_reference(rng):
    q = rng.standard_normal((3, 4))
    k = rng.standard_normal((3, 4))
    queue = rng.standard_normal((5, 4))
    norm = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    qn, kn, queuen = norm(q), norm(k), norm(queue)
    logits = np.concatenate([np.sum(qn * kn, -1, keepdims=True), qn @ queuen.T], -1) / 0.2
    expected = -_log_softmax(logits)[:, 0]
    np.testing.assert_allclose(_np(losses.info_nce(q, k, queue, 0.2)), expected, rtol=1e-5)


def test_mixup_info_nce_by_hand_and_edges(rng):
    q = np.array([[1.0, 0.0]], "float32")
    ka = np.array([[1.0, 0.0]], "float32")
    kb = np.array([[0.0, 1.0]], "float32")
    queue = np.array([[-1.0, 0.0]], "float32")
    # NCE(q, ka): logits (1, -1); NCE(q, kb): logits (0, -1)   (t = 1)
    nce_a = math.log(math.e + math.exp(-1)) - 1
    nce_b = math.log(1 + math.exp(-1))
    out = float(_np(losses.mixup_info_nce(q, ka, kb, queue, 0.3, temperature=1.0))[0])
    assert out == pytest.approx(0.3 * nce_a + 0.7 * nce_b, rel=1e-6)
    qr = rng.standard_normal((2, 3))
    kar, kbr = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    qu = rng.standard_normal((4, 3))
    np.testing.assert_allclose(
        _np(losses.mixup_info_nce(qr, kar, kbr, qu, 1.0)), _np(losses.info_nce(qr, kar, qu)), rtol=1e-6
    )
    np.testing.assert_allclose(
        _np(losses.mixup_info_nce(qr, kar, kbr, qu, 0.0)), _np(losses.info_nce(qr, kbr, qu)), rtol=1e-6
    )


def test_bce_embeddings_by_hand():
    z_mix = np.array([[1.0, 0.0], [1.0, 1.0]], "float32")
    z_a = np.array([[1.0, 0.0], [1.0, 0.0]], "float32")
    z_b = np.array([[0.0, 1.0], [0.0, 1.0]], "float32")
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    out = _np(losses.binary_cross_entropy_embeddings(z_mix, z_a, z_b, 0.6, temperature=0.5))
    # sample 0: cos = (1, 0) -> (2, 0) after t = .5; sample 1: equal similarities -> log 2
    assert out[0] == pytest.approx(-(0.6 * math.log(sig(2)) + 0.4 * math.log(sig(-2))), rel=1e-6)
    assert out[1] == pytest.approx(math.log(2.0), rel=1e-6)
    # lam = 1 is the 2-way CE towards z_a; unnormalised inputs give the same value
    out1 = _np(losses.binary_cross_entropy_embeddings(5 * z_mix, z_a, 2 * z_b, 1.0, temperature=0.5))
    assert out1[0] == pytest.approx(-math.log(sig(2)), rel=1e-6)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        losses.info_nce(np.ones((1, 2)), np.ones((1, 2)), np.ones((3, 2)), temperature=0.0)


# ---------------------------------------------------------------- registry


def _inputs(rng):
    logits = rng.standard_normal((3, 4)).astype("float32")
    ya = np.eye(4, dtype="float32")[[0, 1, 2]]
    yb = np.eye(4, dtype="float32")[[1, 2, 3]]
    z = rng.standard_normal((3, 5)).astype("float32")
    return dict(
        lam=np.array([0.2, 0.5, 0.9], "float32"),
        logits=logits,
        labels_a=ya,
        labels_b=yb,
        z_mix=z,
        z_a=rng.standard_normal((3, 5)).astype("float32"),
        z_b=rng.standard_normal((3, 5)).astype("float32"),
        queue=rng.standard_normal((6, 5)).astype("float32"),
        temperature=0.5,
    )


def test_registry_names_and_parsing():
    assert losses.available() == ["bce", "ce", "infonce", "pbce"]
    assert losses.registry.parse("ce+bce") == (("ce", 1.0), ("bce", 1.0))
    assert losses.registry.parse("infonce + 0.5*bce") == (("infonce", 1.0), ("bce", 0.5))
    assert losses.registry.parse("ce+bce", weights={"bce": 2.0}) == (("ce", 1.0), ("bce", 2.0))
    for bad in ("focal", "ce+", "ce+ce", "", "2**ce"):
        with pytest.raises(ValueError):
            losses.get(bad)
    with pytest.raises(ValueError, match="weights"):
        losses.get("ce", weights={"bce": 1.0})


def test_registry_values(rng):
    inputs = _inputs(rng)
    ce = _np(losses.mixup_cross_entropy(inputs["logits"], inputs["labels_a"], inputs["labels_b"], inputs["lam"]))
    bce = _np(
        losses.binary_cross_entropy_embeddings(
            inputs["z_mix"], inputs["z_a"], inputs["z_b"], inputs["lam"], temperature=0.5
        )
    )
    nce = _np(
        losses.mixup_info_nce(
            inputs["z_mix"], inputs["z_a"], inputs["z_b"], inputs["queue"], inputs["lam"], temperature=0.5
        )
    )
    np.testing.assert_allclose(_np(losses.combined("ce", **inputs)), ce, rtol=1e-6)
    np.testing.assert_allclose(_np(losses.combined("ce+0.5*bce", **inputs)), ce + 0.5 * bce, rtol=1e-6)
    np.testing.assert_allclose(_np(losses.get("infonce+bce")(**inputs)), nce + bce, rtol=1e-6)
    terms = losses.get("ce+pbce").terms(**inputs)
    assert sorted(terms) == ["ce", "pbce"]
    assert losses.get("infonce+bce").required_inputs == ("z_mix", "z_a", "z_b", "queue", "lam")


def test_registry_missing_inputs(rng):
    inputs = _inputs(rng)
    del inputs["queue"]
    with pytest.raises(ValueError, match="queue"):
        losses.combined("infonce", **inputs)
    with pytest.raises(ValueError, match="Unknown loss inputs"):
        losses.combined("ce", foo=1, **inputs)


# ------------------------------------------------------------------ mask losses


def test_mask_loss_functions_by_hand():
    mask = np.array([[0, 1, 0, 1], [1, 1, 1, 1]], "float32").reshape(2, 2, 2, 1)
    assert float(_np(losses.mask_variance(mask))) == pytest.approx(0.125)
    assert float(_np(losses.mask_mean_loss(mask, 0.3))) == pytest.approx(0.35)
    assert float(_np(losses.mask_mean_loss(mask, [0.5, 0.5], reduction="sample"))) == pytest.approx(0.2)
    assert float(_np(losses.mask_loss(mask, 0.3))) == pytest.approx(0.1 * (0.35 - 2 * 0.125))
    assert float(_np(losses.mask_loss(mask, 0.3, mode="mean", weight=1.0))) == pytest.approx(0.35)
    with pytest.raises(ValueError, match="reduction"):
        losses.mask_mean_loss(mask, 0.3, reduction="pixel")
    with pytest.raises(ValueError, match="mode"):
        losses.mask_loss(mask, 0.3, mode="var")


def test_mask_variance_sample_and_batch_centring_by_hand():
    # Two 1x2 masks: m1 = [0, 1] (mean 0.5), m2 = [1, 1] (mean 1).
    mask = np.array([[0.0, 1.0], [1.0, 1.0]], "float32").reshape(2, 1, 2, 1)
    # "sample": each mask around its own mean:
    #   m1: ((0 - .5)^2 + (1 - .5)^2) / 2 = 0.25;  m2: 0;  mean over the batch = 0.125
    assert float(_np(losses.mask_variance(mask))) == pytest.approx(0.125)
    assert float(_np(losses.mask_variance(mask, center="sample"))) == pytest.approx(0.125)
    # "batch": every pixel around the batch mean 3/4:
    #   ((0 - .75)^2 + 3 (1 - .75)^2) / 4 = (0.5625 + 0.1875) / 4 = 0.1875
    #   (= 0.125 + the variance of the means 0.5 and 1, which is 0.0625)
    assert float(_np(losses.mask_variance(mask, center="batch"))) == pytest.approx(0.1875)
    # In the loss at lam = 0.3: L_mean = max(|0.75 - 0.3| - 0.1, 0) = 0.35;
    #   sample: 0.1 (0.35 - 2 * 0.125) = 0.01;  batch: 0.1 (0.35 - 2 * 0.1875) = -0.0025
    assert float(_np(losses.mask_loss(mask, 0.3))) == pytest.approx(0.01)
    assert float(_np(losses.mask_loss(mask, 0.3, var_center="batch"))) == pytest.approx(-0.0025)
    # "mean" mode has no variance term: the centring changes nothing.
    assert float(_np(losses.mask_loss(mask, 0.3, mode="mean", var_center="batch"))) == (
        pytest.approx(0.035)
    )
    with pytest.raises(ValueError, match=r"center.*'batch'.*center='pixel'"):
        losses.mask_variance(mask, center="pixel")
    with pytest.raises(ValueError, match=r"var_center.*'batch'.*var_center='pixel'"):
        losses.mask_loss(mask, 0.3, var_center="pixel")
