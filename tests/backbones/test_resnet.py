import math

import keras
import numpy as np
import pytest

from keras_amix import backbones
from keras_amix.backbones import STAGE_NAMES
from keras_amix.backbones import feature_channels
from keras_amix.backbones import output_stride
from keras_amix.backbones import resnet
from keras_amix.backbones import run_stages
from keras_amix.backbones import stages


def _classifier(backbone, num_classes):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(backbone(inputs))
    outputs = keras.layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, outputs)


def _trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


# Architecture only, so checked once (TF process): building width-64 models
# under JAX spends ~15 s per model in eager initialisers.
# Reference counts: torchvision resnet50 / resnext50_32x4d (1000 classes) and
# the CIFAR ResNet-18 with a 100-class head used in the AMix paper.
@pytest.mark.parametrize(
    "kwargs, num_classes, expected",
    [
        (dict(depth=18, stem="cifar"), 100, 11_220_132),
        (dict(depth=50, stem="imagenet"), 1000, 25_557_032),
        (dict(depth=50, stem="imagenet", groups=32, width_per_group=4), 1000, 25_028_904),
    ],
)
@pytest.mark.backend_independent
def test_parameter_counts_at_width_64(kwargs, num_classes, expected):
    model = _classifier(resnet(**kwargs), num_classes)  # built, never run
    assert _trainable_count(model) == expected


def test_stage_structure_and_names():
    backbone = resnet(18, width=8)
    names = [layer.name for layer in backbone.layers]
    assert names[1:] == list(STAGE_NAMES)
    found = stages(backbone)
    assert [s.name for s in found] == list(STAGE_NAMES)
    assert all(isinstance(s, keras.Model) for s in found)
    assert backbone.get_layer("stage3") is found[3]
    assert backbones.STAGE_NAMES == ("stem", "stage1", "stage2", "stage3", "stage4")
    assert resnet(18, width=8).name == "resnet18_w8"
    assert resnet(50, width=8, groups=2, width_per_group=32).name == "resnext50_2x32d_w8"


@pytest.mark.parametrize(
    "stem, depth, strides, channels",
    [
        ("cifar", 18, [1, 1, 2, 4, 8], [8, 8, 16, 32, 64]),
        ("imagenet", 18, [4, 4, 8, 16, 32], [8, 8, 16, 32, 64]),
        ("cifar", 50, [1, 1, 2, 4, 8], [8, 32, 64, 128, 256]),
    ],
)
def test_output_shapes_strides_and_channels(stem, depth, strides, channels):
    backbone = resnet(depth, width=8, stem=stem)
    assert [output_stride(backbone, s) for s in STAGE_NAMES] == strides
    assert [feature_channels(backbone, s) for s in STAGE_NAMES] == channels
    if depth == 50:
        return  # bottleneck forward passes: test_resnext_grouped_convolution
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    h = x
    for name, stride, c in zip(STAGE_NAMES, strides, channels):
        h = run_stages(backbone, h, start=name, stop=name, training=False)
        assert tuple(h.shape) == (2, 32 // stride, 32 // stride, c), name
    assert tuple(backbone(x).shape) == (2, 32 // strides[-1], 32 // strides[-1], channels[-1])


def test_odd_sizes_give_ceil_division():
    # Every stride-2 layer pads like PyTorch, so sizes are ceil(H / stride).
    cifar = resnet(18, width=8, stem="cifar")
    imagenet = resnet(18, width=8, stem="imagenet")
    for size in [1, 5, 7, 9, 13, 17, 31, 33, 40]:
        shape = cifar.compute_output_shape((1, size, size + 2, 3))
        assert shape[1:3] == (math.ceil(size / 8), math.ceil((size + 2) / 8))
        shape = imagenet.compute_output_shape((1, size, size, 3))
        assert shape[1] == math.ceil(size / 32)


def test_stride_two_convolutions_pad_symmetrically():
    # Hand case: 7x7 stride-2 all-ones kernel over an 8x8 all-ones image.
    # PyTorch padding (3 each side): the top-left window sees 4x4 real pixels,
    # the bottom-right one rows/cols 3..7 = 5x5. Keras "same" would give 25 at
    # the top-left (padding 2 before, 3 after).
    backbone = resnet(18, width=8, stem="imagenet", input_shape=(8, 8, 1))
    stem = backbone.get_layer("stem")
    conv = stem.get_layer("conv")
    conv.kernel.assign(np.ones(conv.kernel.shape, "float32"))
    probe = keras.Model(stem.input, conv.output)
    out = keras.ops.convert_to_numpy(probe(np.ones((1, 8, 8, 1), "float32")))
    assert out.shape == (1, 4, 4, 8)
    np.testing.assert_allclose(out[0, 0, 0], 16.0)
    np.testing.assert_allclose(out[0, -1, -1], 25.0)
    np.testing.assert_allclose(out[0, 0, -1], 20.0)


def test_stage_chain_equals_full_model():
    backbone = resnet(18, width=8)
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    full = keras.ops.convert_to_numpy(backbone(x, training=False))
    chained = run_stages(backbone, x, training=False)
    z3 = run_stages(backbone, x, stop="stage3", training=False)
    resumed = run_stages(backbone, z3, start="stage4", training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(chained), full, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(resumed), full, atol=1e-5)
    assert tuple(z3.shape) == (2, 4, 4, 32)


def test_stages_work_on_symbolic_tensors():
    backbone = resnet(18, width=8)
    inputs = keras.Input((16, 16, 3))
    z3 = run_stages(backbone, inputs, stop="stage3")
    assert tuple(z3.shape) == (None, 4, 4, 32)


def test_resnext_grouped_convolution():
    backbone = resnet(50, width=8, groups=2, width_per_group=32)
    block = backbone.get_layer("stage1").get_layer("block1_conv2")
    # inner = int(8 * 32 / 64) * 2 = 8 channels in 2 groups of 4.
    assert block.groups == 2
    assert tuple(block.kernel.shape) == (3, 3, 4, 8)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    assert tuple(backbone(x, training=False).shape) == (2, 1, 1, 256)


def test_zero_init_residual_makes_blocks_identity():
    # With the last BN scale at zero the residual branch outputs 0, so a block
    # without projection returns relu(x) = x for x >= 0: stage 1 is the
    # identity. A block missing its residual add (or with the ReLU misplaced)
    # fails this.
    x = np.abs(np.random.default_rng(3).normal(size=(2, 8, 8, 8))).astype("float32")
    for depth in (18, 50):
        backbone = resnet(depth, width=8, zero_init_residual=True)
        stage1 = backbone.get_layer("stage1")
        if depth == 18:
            out = stage1(x, training=False)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(out), x, atol=1e-6)
        else:  # bottleneck stage 1 projects 8 -> 32 channels: output = relu(proj(x))
            out = keras.ops.convert_to_numpy(stage1(x, training=False))
            proj = keras.Model(stage1.input, stage1.get_layer("block1_proj_bn").output)
            expected = np.maximum(keras.ops.convert_to_numpy(proj(x, training=False)), 0)
            # later blocks are identities on non-negative inputs as well
            np.testing.assert_allclose(out, expected, atol=1e-5)
    default = resnet(18, width=8)
    gamma = default.get_layer("stage1").get_layer("block1_bn2").gamma
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gamma), 1.0)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(depth=20), ["depth", "20", "18", "101"]),
        (dict(depth=18, width=0), ["width", "0"]),
        (dict(depth=18, stem="tiny"), ["stem", "tiny", "cifar", "imagenet"]),
        (dict(depth=50, groups=0), ["groups", "0"]),
        (dict(depth=50, width_per_group=-4), ["width_per_group", "-4"]),
        (dict(depth=18, groups=32, width_per_group=4), ["groups=32", "depth=18"]),
        (dict(depth=18, input_shape=(32, 32)), ["input_shape"]),
    ],
)
def test_bad_arguments_raise(kwargs, words):
    with pytest.raises(ValueError) as info:
        resnet(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_helpers_reject_backbones_without_stages():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    plain = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="stage3")(x))
    with pytest.raises(ValueError, match=r"stem.*stage1.*stage2.*stage4"):
        stages(plain)
    with pytest.raises(ValueError, match="lacks the stage"):
        run_stages(plain, np.zeros((1, 8, 8, 3), "float32"))
    backbone = resnet(18, width=8)
    with pytest.raises(ValueError, match="stage5"):
        run_stages(backbone, np.zeros((1, 8, 8, 3), "float32"), stop="stage5")
    with pytest.raises(ValueError, match="must not come after"):
        run_stages(backbone, np.zeros((1, 8, 8, 3), "float32"), start="stage3", stop="stage2")
    with pytest.raises(ValueError, match="stage"):
        output_stride(backbone, "block3")


def test_save_and_load_round_trip(tmp_path):
    backbone = resnet(18, width=8, stem="cifar")
    model = _classifier(backbone, 3)
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    # Move BN statistics away from their initial values first.
    model(x, training=True)
    for var in model.non_trainable_weights:
        var.assign(np.full(var.shape, 0.5, "float32"))
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "resnet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)), expected, atol=1e-5
    )
    loaded_backbone = loaded.get_layer(backbone.name)
    assert [s.name for s in stages(loaded_backbone)] == list(STAGE_NAMES)
    assert output_stride(loaded_backbone, "stage3") == 4
    assert feature_channels(loaded_backbone, "stage3") == 32


@pytest.mark.training
def test_fit_one_step_updates_weights():
    model = _classifier(resnet(18, width=8), 3)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    before = keras.ops.convert_to_numpy(model.get_layer("head").kernel).copy()
    conv = model.get_layer("resnet18_w8").get_layer("stem").get_layer("conv")
    conv_before = keras.ops.convert_to_numpy(conv.kernel).copy()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(keras.ops.convert_to_numpy(model.get_layer("head").kernel), before)
    assert not np.allclose(keras.ops.convert_to_numpy(conv.kernel), conv_before)
