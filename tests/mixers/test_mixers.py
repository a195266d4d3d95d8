"""Properties shared by every mixer, run under each backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_amix import mixers
from keras_amix.mixers import names

ALL = mixers.available()
MODEL_FREE = [n for n in ALL if not mixers.get(n).requires_saliency]
BACKEND = keras.backend.backend()


def _data(batch=4, height=8, width=8, channels=3, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 2.0, (batch, height, width, channels)).astype("float32")
    labels = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)]
    saliency = rng.gamma(0.5, size=(batch, height, width)).astype("float32")
    return images, labels, saliency


def _extra(mixer, saliency):
    return {"saliency": saliency} if mixer.requires_saliency else {}


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


# The α grid of the paper's (and OpenMixup's) CIFAR search.
ALPHA_GRID = (0.2, 0.5, 1.0, 2.0, 4.0)
# The supervised defaults that grid search picked (AMix §4.1, OpenMixup's
# CIFAR configs), written out here so that a changed table fails a test.
PAPER_ALPHA = {"mixup": 1.0, "cutmix": 0.2, "saliencymix": 0.2, "fmix": 0.2,
               "resizemix": 1.0, "puzzlemix": 1.0, "comixup": 2.0, "manifoldmix": 2.0}


def test_registry():
    assert ALL == sorted(names.DEFAULT_ALPHA)
    assert isinstance(mixers.get("MixUp"), mixers.MixUp)
    assert mixers.get_class("CutMix") is mixers.CutMix
    with pytest.raises(ValueError, match=r"Unknown mixer name='nomix'. Available mixers: \["):
        mixers.get_class("nomix")
    m = mixers.get("cutmix", alpha=0.5)
    assert mixers.get(m) is m and m.alpha == 0.5
    with pytest.raises(ValueError, match="Available mixers"):
        mixers.get("nomix")


def test_one_default_alpha_per_mixer():
    # names.py (what the binaries read before Keras loads) is what the classes hold.
    assert {n: mixers.get_class(n).default_alpha for n in ALL} == names.DEFAULT_ALPHA
    assert names.DEFAULT_ALPHA == PAPER_ALPHA
    for name in ALL:
        default = mixers.get_class(name).default_alpha
        assert default in ALPHA_GRID, (name, default)
        assert mixers.get(name).alpha == default  # alpha=None: the class's default
        assert mixers.get(name, alpha=None).get_config()["alpha"] == default
        assert mixers.get(name, alpha=4.0).alpha == 4.0  # an explicit α wins
    # ManifoldMix sets its own α, not MixUp's.
    assert mixers.ManifoldMix.default_alpha == 2.0 != mixers.MixUp.default_alpha


def test_cross_view_names_are_the_mixers_of_two_images():
    image_only = tuple(n for n in names.DEFAULT_ALPHA
                       if not mixers.get_class(n).requires_saliency
                       and not mixers.get_class(n).mixes_hidden)
    assert names.CROSS_VIEW == image_only


def test_register_refuses_a_class_without_default_alpha():
    class NoAlpha(mixers.Mixer):
        pass

    for alpha in (None, 0.0, True, "1"):
        NoAlpha.default_alpha = alpha
        with pytest.raises(ValueError, match=r"`default_alpha`.*NoAlpha.default_alpha="):
            mixers.register("noalpha")(NoAlpha)
    assert "noalpha" not in mixers.available()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "batch,height,width,channels", [(4, 8, 8, 3), (3, 8, 12, 1), (2, 12, 8, 3)]
)
def test_labels_match_pixels(name, batch, height, width, channels):
    images, labels, saliency = _data(batch, height, width, channels)
    mixer = mixers.get(name, seed=3, per_sample=True)
    params = mixer.sample_params(images, labels, **_extra(mixer, saliency))
    lam, perm = _np(params["lam"]), _np(params["perm"])
    assert lam.shape == (batch,) and perm.dtype == np.int32
    assert sorted(perm.tolist()) == list(range(batch))
    assert np.all((lam >= 0) & (lam <= 1))
    images_b = images[perm]
    mixed = _np(mixer.mix_images(images, images_b, params))
    assert mixed.shape == images.shape and mixed.dtype == images.dtype
    # Convex: the output stays in the input range.
    assert mixed.min() >= images.min() - 1e-5 and mixed.max() <= images.max() + 1e-5
    if "mask" in params:
        mask = _np(params["mask"])
        assert mask.shape == (batch, height, width, 1)
        np.testing.assert_allclose(mask.mean(axis=(1, 2, 3)), lam, atol=1e-6)
        np.testing.assert_array_equal(np.unique(mask), np.unique(np.round(mask)))
        # Where the mask is 1 the first image is kept exactly.
        keep = np.broadcast_to(mask > 0.5, images.shape)
        if "source_a" not in params:  # PuzzleMix transport moves blocks
            np.testing.assert_array_equal(mixed[keep], images[keep])
    else:
        w = lam.reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(mixed, w * images + (1 - w) * images_b, atol=1e-5)
    mixed_labels = _np(mixer.mix_labels(labels, params))
    np.testing.assert_allclose(mixed_labels.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        mixed_labels, lam[:, None] * labels + (1 - lam[:, None]) * labels[perm], atol=1e-6
    )


@pytest.mark.parametrize("name", ALL)
def test_call_rows_sum_to_one_and_shapes(name):
    images, labels, saliency = _data(3, 8, 8, 1)
    mixer = mixers.get(name, seed=1)
    out_images, out_labels = mixer(images, labels, **_extra(mixer, saliency))
    assert tuple(out_images.shape) == images.shape
    assert keras.backend.standardize_dtype(out_images.dtype) == "float32"
    np.testing.assert_allclose(_np(out_labels).sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_identity(name):
    images, labels, saliency = _data(4, 8, 8, 3)
    mixer = mixers.get(name, fixed_lam=1.0, seed=0)
    out_images, out_labels = mixer(images, labels, **_extra(mixer, saliency))
    np.testing.assert_allclose(_np(out_images), images, atol=1e-6)
    np.testing.assert_allclose(_np(out_labels), labels, atol=1e-6)
    out_images, out_labels = mixers.get(name)(
        images, labels, training=False, **_extra(mixer, saliency)
    )
    np.testing.assert_array_equal(_np(out_images), images)
    np.testing.assert_array_equal(_np(out_labels), labels)


@pytest.mark.parametrize("name", ALL)
def test_seed_repeats(name):
    images, labels, saliency = _data(4, 8, 8, 3)
    outs = [
        mixers.get(name, seed=7)(images, labels, **_extra(mixers.get(name), saliency))
        for _ in range(2)
    ]
    np.testing.assert_array_equal(_np(outs[0][0]), _np(outs[1][0]))
    np.testing.assert_array_equal(_np(outs[0][1]), _np(outs[1][1]))
    # A SeedGenerator advances: two calls differ.
    mixer = mixers.get(name, seed=7)
    extra = _extra(mixer, saliency)
    first, second = mixer(images, labels, **extra), mixer(images, labels, **extra)
    assert not np.array_equal(_np(first[1]), _np(second[1])) or not np.array_equal(
        _np(first[0]), _np(second[0])
    )


@pytest.mark.parametrize("name", ALL)
def test_dict_and_int_labels(name):
    images, labels, saliency = _data(4, 8, 8, 3)
    int_labels = labels.argmax(1).astype("int32")
    mixer = mixers.get(name, num_classes=5, seed=2)
    extra = _extra(mixer, saliency)
    out = mixer({"images": images, "labels": int_labels[:, None]}, **extra)
    assert set(out) == {"images", "labels"}
    assert tuple(out["labels"].shape) == (4, 5)
    reference = mixers.get(name, num_classes=5, seed=2)(images, labels, **extra)
    np.testing.assert_allclose(_np(out["labels"]), _np(reference[1]), atol=1e-6)
    np.testing.assert_allclose(_np(out["images"]), _np(reference[0]), atol=1e-6)
    only_images = mixer({"images": images}, **extra)
    assert set(only_images) == {"images"}


def test_integer_images_keep_dtype():
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("uint8")
    labels = np.eye(4, dtype="float32")
    for name in ("mixup", "cutmix"):
        out, _ = mixers.get(name, seed=0)(images, labels)
        assert keras.backend.standardize_dtype(out.dtype) == "uint8"


@pytest.mark.parametrize("name", ALL)
def test_serialization_round_trip(name):
    mixer = mixers.get(name, alpha=0.5, seed=4, num_classes=3)
    config = mixer.get_config()
    clone = type(mixer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(mixer))
    assert type(restored) is type(mixer) and restored.get_config() == config


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": 0.0}, r"`alpha` must be a number > 0; received alpha=0.0\."),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": True}, r"received alpha=True"),
        ({"fixed_lam": 1.5}, "fixed_lam"),
        ({"fixed_lam": -0.1}, "fixed_lam"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments(kwargs, match):
    for name in ALL:
        with pytest.raises(ValueError, match=match):
            mixers.get(name, **kwargs)


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs(name):
    images, labels, saliency = _data(4, 8, 8, 3)
    mixer = mixers.get(name, num_classes=5)
    extra = _extra(mixer, saliency)
    with pytest.raises(ValueError, match=r"batch size 1"):
        mixer(images[:1], labels[:1], **{k: v[:1] for k, v in extra.items()})
    with pytest.raises(ValueError, match=r"num_classes=5.*\(4, 3\)"):
        mixer(images, labels[:, :3], **extra)
    with pytest.raises(ValueError, match="labels"):
        mixer(images, labels[:, :, None], **extra)
    with pytest.raises(ValueError, match="num_classes"):
        mixers.get(name)(images, labels.argmax(1), **extra)
    if not mixer.mixes_hidden:
        with pytest.raises(ValueError, match=r"images.*rank-4.*\(4, 8, 24\)"):
            mixer(images.reshape(4, 8, 24), labels, **extra)
    if mixer.requires_saliency:
        with pytest.raises(ValueError, match="saliency"):
            mixer(images, labels)


@pytest.mark.parametrize("name", ALL)
def test_compiled(name):
    images, labels, saliency = _data(4, 8, 8, 3)
    mixer = mixers.get(name, seed=5)
    extra = _extra(mixer, saliency)
    eager = mixers.get(name, seed=5)(images, labels, **extra)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        out = tf.function(lambda x, y, **e: mixer(x, y, **e), jit_compile=False)(
            images, labels, **extra
        )
    elif BACKEND == "jax":
        import jax

        state = mixer.seed_generator.state

        def step(seed_state, x, y, e):
            with keras.StatelessScope(state_mapping=[(state, seed_state)]) as scope:
                out = mixer(x, y, **e)
            return out, scope.get_current_value(state)

        out, new_state = jax.jit(step)(state.value, images, labels, extra)
        assert not np.array_equal(_np(new_state), _np(state.value))
    else:
        pytest.skip(f"no compiled-function test for backend {BACKEND}")
    np.testing.assert_allclose(_np(out[0]), _np(eager[0]), atol=1e-5)
    np.testing.assert_allclose(_np(out[1]), _np(eager[1]), atol=1e-6)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the bridge serves JAX and torch")
def test_inside_tf_data_refuses_model_inputs():
    import tensorflow as tf

    images, labels, _ = _data(4, 8, 8, 3)
    mixer = mixers.get("puzzlemix", seed=0)
    saliency = np.ones((4, 8, 8, 1), "float32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels, saliency)).batch(4)
    with pytest.raises(ValueError, match=r"inside tf.data .* \['saliency'\]"):
        ds.map(lambda x, y, s: mixer(x, y, saliency=s))


@pytest.mark.parametrize("name", MODEL_FREE)
def test_inside_tf_data(name):
    """Every backend: TensorFlow runs the ops in the graph, JAX and torch
    through keras_amix.data.mixer_bridge; the same draws as eager calls."""
    if BACKEND != "tensorflow" and name not in ("mixup", "cutmix"):
        pytest.skip("one bridge for every mixer: mixup and cutmix test it on this backend "
                    "(each mixer's eager call is tested on it elsewhere)")
    import tensorflow as tf

    images, labels, _ = _data(6, 8, 8, 3)
    mixer = mixers.get(name, seed=0, num_classes=5)
    ds = tf.data.Dataset.from_tensor_slices((images, labels.argmax(1)))
    ds = ds.batch(3).map(lambda x, y: mixer(x, y))
    batches = list(ds)
    assert len(batches) == 2
    for x, y in batches:
        assert tuple(x.shape) == (3, 8, 8, 3)
        np.testing.assert_allclose(y.numpy().sum(1), 1.0, atol=1e-6)
    dict_ds = tf.data.Dataset.from_tensor_slices({"images": images, "labels": labels})
    out = next(iter(dict_ds.batch(3).map(mixer)))  # one batch shape: one trace/compile
    assert tuple(out["labels"].shape) == (3, 5)
    # The pipeline's static shapes and dtypes, and the same draws as eager calls
    # of a mixer with the same seed, batch after batch.
    assert tuple(ds.element_spec[0].shape) == (None, 8, 8, 3)
    assert tuple(ds.element_spec[1].shape) == (None, 5)
    assert ds.element_spec[1].dtype == tf.float32
    eager = mixers.get(name, seed=0, num_classes=5)
    for (x, y), start in zip(batches, (0, 3)):
        want_x, want_y = eager(images[start:start + 3], labels.argmax(1)[start:start + 3])
        np.testing.assert_allclose(x.numpy(), _np(want_x), atol=1e-6)
        np.testing.assert_allclose(y.numpy(), _np(want_y), atol=1e-6)
    images_only = next(iter(tf.data.Dataset.from_tensor_slices(images).batch(3).map(
        lambda x: mixer(x)[0])))
    assert tuple(images_only.shape) == (3, 8, 8, 3)
