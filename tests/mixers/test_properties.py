"""Hypothesis properties over every registered mixer, and the label checks.

Random batch 2-9, odd / non-square sizes, 1 or 3 channels, image dtypes
uint8 / float16 / bfloat16 / float32, λ at its edges, constant images and
all-equal labels: the output keeps shape and dtype, is finite and inside the
input range, label rows sum to 1, masks lie in [0, 1] with mean λ. Bad labels
and unsupported dtypes get a ValueError that names them.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from keras_amix import mixers

ALL = mixers.available()
BACKEND = keras.backend.backend()
IMAGE_DTYPES = ("uint8", "float16", "bfloat16", "float32")
EDGE_LAMS = (None, 0.0, 1.0, 1e-7, 1.0 - 1e-7, 0.3)

PROPERTY = settings(
    # JAX compiles each op for each new shape eagerly: fewer examples there.
    max_examples=2 if BACKEND == "jax" else 3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _np32(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")), dtype="float64")


@st.composite
def batches(draw):
    # A few batch sizes in [2, 9] and image sizes (odd, non-square, one
    # divisible by PuzzleMix's grid of 4): each new shape recompiles every op
    # under JAX, so a small set keeps the file fast.
    batch = draw(st.sampled_from((2, 3, 9)))
    height, width = draw(st.sampled_from(((5, 7), (8, 12))))
    channels = draw(st.sampled_from((1, 3)))
    classes = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    constant = draw(st.booleans())
    if constant:
        images = np.full((batch, height, width, channels), rng.uniform(0, 255), "float32")
    else:
        images = rng.uniform(0, 255, (batch, height, width, channels)).astype("float32")
    if draw(st.booleans()):
        ids = np.full((batch,), rng.integers(0, classes))
    else:
        ids = rng.integers(0, classes, batch)
    return {
        "images": images,
        "ids": ids.astype("int32"),
        "classes": classes,
        "dtype": draw(st.sampled_from(IMAGE_DTYPES)),
        "lam": draw(st.sampled_from(EDGE_LAMS)),
        "int_labels": draw(st.booleans()),
        "seed": seed,
        "saliency": np.zeros((batch, height, width), "float32")
        if constant
        else rng.gamma(0.5, size=(batch, height, width)).astype("float32"),
    }


@pytest.mark.parametrize("name", ALL)
@PROPERTY
@given(data=batches())
def test_mixer_properties(name, data):
    mixer = mixers.get(name, num_classes=data["classes"], fixed_lam=data["lam"], seed=data["seed"])
    extra = {"saliency": data["saliency"]} if mixer.requires_saliency else {}
    dtype = data["dtype"]
    images = ops.cast(data["images"], dtype)
    onehot = np.eye(data["classes"], dtype="float32")[data["ids"]]
    labels = data["ids"] if data["int_labels"] else onehot
    if name == "puzzlemix" and (images.shape[1] % 4 or images.shape[2] % 4):
        with pytest.raises(ValueError, match=r"divisible by grid_size=4.*\(\d+, \d+\)"):
            mixer(images, labels, **extra)
        return
    params = mixer.sample_params(images, onehot, **extra)
    lam = _np32(params["lam"])
    perm = np.asarray(ops.convert_to_numpy(params["perm"]))
    assert np.all((lam >= 0) & (lam <= 1))
    if data["lam"] is not None and "mask" not in params:
        np.testing.assert_allclose(lam, data["lam"], atol=1e-7)
    if "mask" in params:
        mask = _np32(params["mask"])
        assert mask.shape == images.shape[:3] + (1,)
        assert np.all(np.isfinite(mask)) and mask.min() >= 0 and mask.max() <= 1
        np.testing.assert_allclose(mask.mean(axis=(1, 2, 3)), lam, atol=1e-6)
    mixed = mixer.mix_images(images, ops.take(images, params["perm"], axis=0), params)
    assert tuple(mixed.shape) == tuple(images.shape)
    assert keras.backend.standardize_dtype(mixed.dtype) == dtype
    x, m = _np32(images), _np32(mixed)
    assert np.all(np.isfinite(m))
    assert m.min() >= x.min() and m.max() <= x.max()
    mixed_labels = _np32(mixer.mix_labels(labels, params))
    assert np.all(np.isfinite(mixed_labels))
    assert mixed_labels.min() >= 0 and mixed_labels.max() <= 1 + 1e-6
    np.testing.assert_allclose(mixed_labels.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        mixed_labels, lam[:, None] * onehot + (1 - lam[:, None]) * onehot[perm], atol=1e-6
    )
    if len(set(data["ids"].tolist())) == 1:
        np.testing.assert_allclose(mixed_labels, onehot, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
@PROPERTY
@given(
    data=batches(),
    bad=st.sampled_from(("too_large", "minus_one", "half_row", "negative", "nan", "float16_off")),
)
def test_bad_labels_raise_value_error_naming_them(name, data, bad):
    k = data["classes"]
    mixer = mixers.get(name, num_classes=k, seed=0)
    extra = {"saliency": data["saliency"]} if mixer.requires_saliency else {}
    ids = data["ids"].copy()
    onehot = np.eye(k, dtype="float32")[ids]
    if bad == "too_large":
        ids[-1], labels, match = k, ids, rf"labels.*\[0, num_classes={k}\).*max {k}"
    elif bad == "minus_one":
        ids[0], labels, match = -1, ids, r"labels.*\[0, num_classes.*min -1"
    elif bad == "half_row":
        onehot[0] *= 0.5
        labels, match = onehot, r"labels.*sum to 1.*row 0 sums to 0.5"
    elif bad == "negative":
        # Sums to 1 but holds a negative entry.
        onehot[-1, (ids[-1] + 1) % k] = -0.25
        onehot[-1, ids[-1]] = 1.25
        labels, match = onehot, r"labels.*non-negative"
    elif bad == "nan":
        onehot[0, 0] = np.nan
        labels, match = onehot, r"labels.*row 0 sums to nan"
    else:
        labels = ops.cast(onehot * 0.97, "float16")
        match = r"labels.*float16"
    with pytest.raises(ValueError, match=match):
        mixer(ops.cast(data["images"], data["dtype"]), labels, **extra)
    with pytest.raises(ValueError, match=match):
        mixer.mix_labels(labels, {"lam": ops.ones((len(ids),)), "perm": ops.arange(len(ids))})


@pytest.mark.parametrize("name", ALL)
def test_unsupported_image_dtype_is_named(name):
    mixer = mixers.get(name, seed=0)
    extra = {"saliency": np.ones((2, 4, 4), "float32")} if mixer.requires_saliency else {}
    images = np.ones((2, 4, 4, 3), bool)
    with pytest.raises(ValueError, match=r"images.dtype=bool"):
        mixer(images, np.eye(2, dtype="float32"), **extra)


def test_soft_label_tolerance_follows_the_dtype():
    # Label smoothing and low-precision rounding pass, a 1 % error does not.
    smooth = np.full((3, 10), 0.01, "float32")
    smooth[np.arange(3), [0, 4, 9]] = 0.91
    for dtype in ("float16", "bfloat16", "float32"):
        labels = ops.cast(smooth, dtype)
        out = mixers.one_hot_labels(labels)
        assert tuple(out.shape) == (3, 10)
    assert mixers.base.label_sum_tolerance("float32", 10) < 1e-5
    assert mixers.base.label_sum_tolerance("bfloat16", 10) < 0.04
    with pytest.raises(ValueError, match="sum to 1"):
        mixers.one_hot_labels(smooth * 1.01)
    with pytest.raises(ValueError, match="sum to 1"):
        mixers.one_hot_labels(ops.cast(smooth * 0.9, "bfloat16"))


def _bad_batch():
    images = np.random.default_rng(0).uniform(size=(4, 6, 6, 3)).astype("float32")
    return images, np.array([0, 1, 2, 5], "int32"), np.eye(3, dtype="float32")[[0, 1, 2, 2]] * 0.5


def test_checks_fire_inside_compiled_functions():
    images, bad_ids, half_rows = _bad_batch()
    good_ids = np.array([0, 1, 2, 2], "int32")
    mixer = mixers.get("mixup", num_classes=3, fixed_lam=0.5, seed=0)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        step = tf.function(lambda x, y: mixer(x, y), jit_compile=False)
        errors = (tf.errors.InvalidArgumentError,)
    elif BACKEND == "jax":
        import jax

        def step(x, y):
            state = mixer.seed_generator.state
            with keras.StatelessScope(state_mapping=[(state, state.value)]):
                return jax.jit(lambda x, y: mixer(x, y))(x, y)

        errors = (jax.errors.JaxRuntimeError, ValueError)
    else:
        step = mixer  # torch is eager
        errors = (ValueError,)
    out = step(images, good_ids)
    np.testing.assert_allclose(_np32(out[1]).sum(1), 1.0, atol=1e-6)
    with pytest.raises(errors, match=r"\[0, num_classes=3\)"):
        _np32(step(images, bad_ids)[1])
    with pytest.raises(errors, match=r"sum to 1"):
        _np32(step(images, half_rows)[1])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data use needs the TF backend")
def test_checks_fire_inside_tf_data():
    import tensorflow as tf

    images, bad_ids, half_rows = _bad_batch()
    mixer = mixers.get("cutmix", num_classes=3, seed=0)
    for labels, match in ((bad_ids, r"\[0, num_classes=3\)"), (half_rows, "sum to 1")):
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4).map(mixer)
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            list(ds)


@pytest.fixture
def toy_registry(monkeypatch):
    """The registry as it is, restored after the test (a toy mixer leaves no trace)."""
    monkeypatch.setattr(mixers.base, "_REGISTRY", dict(mixers.base._REGISTRY))


def test_a_new_mixer_is_one_class_and_one_registration(toy_registry):
    # Everything a contributor writes for a new mixer: the class, its default
    # α and the decorator. No list or table elsewhere changes.
    @mixers.register("stripemix")
    class StripeMix(mixers.Mixer):
        """Keeps the first round(λ·W) columns of image a, the rest from b."""

        default_alpha = 0.5

        def sample_params(self, images, labels=None, **extra):
            batch, height, width = ops.shape(images)[:3]
            cols = ops.round(self.sample_lam(batch) * ops.cast(width, "float32"))
            keep = ops.arange(width, dtype="float32")[None, :] < cols[:, None]
            mask = ops.broadcast_to(ops.cast(keep, "float32")[:, None, :, None],
                                    (batch, height, width, 1))
            return {"lam": ops.mean(mask, axis=(1, 2, 3)), "mask": mask,
                    "perm": self.sample_perm(batch)}

    assert "stripemix" in mixers.available()
    assert mixers.get_class("stripemix") is StripeMix and StripeMix.default_alpha == 0.5
    assert mixers.get("stripemix").alpha == 0.5
    assert mixers.get("stripemix", alpha=2.0).alpha == 2.0
    # The properties above are parametrised by the registry, with no per-name
    # list: collected before the toy existed, they held every other mixer...
    assert ALL == [n for n in mixers.available() if n != "stripemix"]
    # ... and they run on the toy as they are.
    test_mixer_properties(name="stripemix")
    test_bad_labels_raise_value_error_naming_them(name="stripemix")
    test_unsupported_image_dtype_is_named(name="stripemix")
