"""ResNet / ResNeXt backbones with a CIFAR or ImageNet stem and named stages.

The backbone is a functional `keras.Model` that chains five nested functional
sub-models named `"stem"`, `"stage1"`, `"stage2"`, `"stage3"` and `"stage4"`;
its output is the unpooled stage-4 feature map `(B, h, w, C)`. Models that mix
hidden features (ManifoldMix) or read intermediate features (the Mix Block reads
stage 3) run the chain stage by stage with `run_stages`.

Only built-in Keras layers are used, so a model containing the backbone saves
to and loads from a `.keras` file without custom objects; with `bn_splits > 1`
its BatchNorms are `keras_amix.layers.SplitBatchNormalization` (registered
when keras_amix is imported).
"""

import keras

from keras_amix.layers.split_batch_norm import SplitBatchNormalization

STAGE_NAMES = ("stem", "stage1", "stage2", "stage3", "stage4")

# depth -> (block type, blocks per stage)
_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
_STEMS = ("cifar", "imagenet")
_EXPANSION = {"basic": 1, "bottleneck": 4}

# torchvision's BatchNorm2d defaults (momentum 0.1 in torch == 0.9 in Keras).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _conv_init():
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _conv(x, filters, kernel_size, strides, name, groups=1):
    """Conv without bias; stride-2 convs pad symmetrically like PyTorch."""
    pad = (kernel_size - 1) // 2
    if strides > 1 and pad > 0:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=False,
        kernel_initializer=_conv_init(),
        name=name,
    )(x)


def _bn(x, name, splits, zero_init=False):
    kwargs = dict(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name,
                  gamma_initializer="zeros" if zero_init else "ones")
    if splits > 1:
        return SplitBatchNormalization(splits, **kwargs)(x)
    return keras.layers.BatchNormalization(**kwargs)(x)


def _basic_block(x, planes, strides, name, zero_init_residual, bn_splits, **unused):
    in_channels = x.shape[-1]
    shortcut = x
    y = _conv(x, planes, 3, strides, f"{name}_conv1")
    y = _bn(y, f"{name}_bn1", bn_splits)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(y, planes, 3, 1, f"{name}_conv2")
    y = _bn(y, f"{name}_bn2", bn_splits, zero_init=zero_init_residual)
    if strides != 1 or in_channels != planes:
        shortcut = _conv(x, planes, 1, strides, f"{name}_proj_conv")
        shortcut = _bn(shortcut, f"{name}_proj_bn", bn_splits)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _bottleneck_block(
    x, planes, strides, name, zero_init_residual, bn_splits, groups, width_per_group
):
    in_channels = x.shape[-1]
    out_channels = planes * _EXPANSION["bottleneck"]
    inner = int(planes * (width_per_group / 64.0)) * groups
    shortcut = x
    y = _conv(x, inner, 1, 1, f"{name}_conv1")
    y = _bn(y, f"{name}_bn1", bn_splits)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    # ResNet v1.5: the stride sits in the 3x3 convolution.
    y = _conv(y, inner, 3, strides, f"{name}_conv2", groups=groups)
    y = _bn(y, f"{name}_bn2", bn_splits)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(y, out_channels, 1, 1, f"{name}_conv3")
    y = _bn(y, f"{name}_bn3", bn_splits, zero_init=zero_init_residual)
    if strides != 1 or in_channels != out_channels:
        shortcut = _conv(x, out_channels, 1, strides, f"{name}_proj_conv")
        shortcut = _bn(shortcut, f"{name}_proj_bn", bn_splits)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _build_stem(channels, width, stem, bn_splits):
    inputs = keras.Input((None, None, channels), name="stem_input")
    if stem == "cifar":
        x = _conv(inputs, width, 3, 1, "conv")
    else:
        x = _conv(inputs, width, 7, 2, "conv")
    x = _bn(x, "bn", bn_splits)
    x = keras.layers.ReLU(name="relu")(x)
    if stem == "imagenet":
        # Zero padding equals PyTorch's -inf padding here: inputs are >= 0.
        x = keras.layers.ZeroPadding2D(1, name="pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool")(x)
    return keras.Model(inputs, x, name="stem")


def _build_stage(index, in_channels, planes, blocks, strides, block, block_kwargs):
    name = f"stage{index}"
    inputs = keras.Input((None, None, in_channels), name=f"{name}_input")
    block_fn = _basic_block if block == "basic" else _bottleneck_block
    x = inputs
    for b in range(blocks):
        x = block_fn(
            x,
            planes,
            strides if b == 0 else 1,
            name=f"block{b + 1}",
            **block_kwargs,
        )
    return keras.Model(inputs, x, name=name)


def _default_name(depth, groups, width_per_group, width):
    if groups > 1:
        base = f"resnext{depth}_{groups}x{width_per_group}d"
    else:
        base = f"resnet{depth}"
    return base if width == 64 else f"{base}_w{width}"


def resnet(
    depth,
    width=64,
    stem="cifar",
    groups=1,
    width_per_group=64,
    input_shape=(None, None, 3),
    zero_init_residual=False,
    bn_splits=1,
    name=None,
):
    """ResNet-18/34/50/101 or ResNeXt backbone returning the stage-4 map.

    Standard ResNet v1.5 (the stride of a downsampling bottleneck sits in its
    3×3 convolution), convolutions without bias followed by BatchNorm, and a
    1×1 conv + BN projection shortcut wherever the shape changes. Stages have
    `width`, 2·`width`, 4·`width` and 8·`width` planes (times 4 output
    channels for bottleneck blocks); bottleneck inner width is
    `int(planes * width_per_group / 64) * groups` as in torchvision, so
    ResNeXt-50 32×4d is `resnet(50, groups=32, width_per_group=4)`.

    Conventions follow torchvision so that its weights could be ported:
    stride-2 convolutions pad symmetrically (explicit `ZeroPadding2D` +
    `"valid"`), BatchNorm momentum 0.9 / epsilon 1e-5, conv kernels drawn
    from a fan-out He normal.

    Args:
        depth: int, one of 18, 34 (basic blocks), 50, 101 (bottlenecks).
        width: int, base width of the stem and stage 1 (64 standard; use
            8-16 for CPU runs and tests).
        stem: `"cifar"` (3×3 conv stride 1, BN, ReLU, no max-pool; for
            32-64 px images) or `"imagenet"` (7×7 conv stride 2, BN, ReLU,
            3×3 max-pool stride 2).
        groups: int, grouped-conv cardinality of bottleneck blocks (ResNeXt).
        width_per_group: int, bottleneck width per group (64 for ResNet).
        input_shape: `(H, W, C)` of the input; H and W may be None.
        zero_init_residual: bool, initialise the last BN scale of every
            residual branch to zero, so each block starts as the identity.
        bn_splits: int >= 1; above 1 every BatchNorm is a
            `keras_amix.layers.SplitBatchNormalization` with that many groups
            (MoCo's shuffling BN on one device; inference is unchanged).
        name: optional model name; defaults to e.g. `"resnet18"`,
            `"resnext50_32x4d"` (with `_w{width}` when `width != 64`).

    Call arguments:
        inputs: float tensor `(B, H, W, C)`, already normalised.
        training: bool, BatchNorm mode.

    Returns:
        A functional `keras.Model` whose output is the stage-4 feature map
        `(B, H/s, W/s, 8·width·expansion)`, with s = 8 (cifar) or 32
        (imagenet). Its layers are the nested sub-models named in
        `STAGE_NAMES`; see `stages`, `run_stages`, `output_stride` and
        `feature_channels`.

    Example:

    ```python
    backbone = keras_amix.backbones.resnet(18, width=16, stem="cifar")
    x = np.zeros((4, 32, 32, 3), "float32")
    backbone(x).shape                        # (4, 4, 4, 128)
    z3 = keras_amix.backbones.run_stages(backbone, x, stop="stage3")
    z3.shape                                 # (4, 8, 8, 64)
    ```

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
        Xie et al., "Aggregated Residual Transformations for Deep Neural
        Networks" (ResNeXt), CVPR 2017. The AMix paper (section 4) uses
        ResNet-18/50 and ResNeXt-50 with these two stems.
    """
    if isinstance(depth, bool) or depth not in _DEPTHS:
        raise ValueError(
            f"Invalid `depth`: {depth!r}. Allowed values: {sorted(_DEPTHS)}."
        )
    if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
        raise ValueError(f"`width` must be a positive integer. Received: width={width!r}")
    if stem not in _STEMS:
        raise ValueError(f"Invalid `stem`: {stem!r}. Allowed values: {list(_STEMS)}.")
    for arg, value in (("groups", groups), ("width_per_group", width_per_group)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(
                f"`{arg}` must be a positive integer. Received: {arg}={value!r}"
            )
    block, blocks_per_stage = _DEPTHS[depth]
    if block == "basic" and (groups != 1 or width_per_group != 64):
        raise ValueError(
            f"Basic-block ResNets (depth 18, 34) support only groups=1 and "
            f"width_per_group=64. Received: depth={depth}, groups={groups}, "
            f"width_per_group={width_per_group}. Use depth 50 or 101 for ResNeXt."
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(
            "`input_shape` must be (H, W, C) with a known channel count C "
            f"(H and W may be None). Received: input_shape={input_shape!r}"
        )
    if block == "bottleneck" and int(width * width_per_group / 64.0) * groups <= 0:
        raise ValueError(
            f"`width`={width} with `width_per_group`={width_per_group} gives "
            "an empty bottleneck; increase `width` or `width_per_group`."
        )

    if isinstance(bn_splits, bool) or not isinstance(bn_splits, int) or bn_splits < 1:
        raise ValueError(f"`bn_splits` must be an int >= 1. Received: bn_splits={bn_splits!r}")
    block_kwargs = {"zero_init_residual": zero_init_residual, "bn_splits": bn_splits}
    if block == "bottleneck":
        block_kwargs.update(groups=groups, width_per_group=width_per_group)

    inputs = keras.Input(input_shape, name="images")
    x = _build_stem(input_shape[-1], width, stem, bn_splits)(inputs)
    channels = width
    for index, blocks in enumerate(blocks_per_stage, start=1):
        planes = width * 2 ** (index - 1)
        stage = _build_stage(
            index,
            channels,
            planes,
            blocks,
            strides=1 if index == 1 else 2,
            block=block,
            block_kwargs=block_kwargs,
        )
        x = stage(x)
        channels = planes * _EXPANSION[block]
    return keras.Model(
        inputs, x, name=name or _default_name(depth, groups, width_per_group, width)
    )


def stages(backbone):
    """The backbone's stage layers, in the order of `STAGE_NAMES`.

    Raises:
        ValueError: if the backbone has no layer with one of the stage names
            (e.g. a user-built backbone); the message names the missing ones.
    """
    get_layer = getattr(backbone, "get_layer", None)
    if get_layer is None:
        raise ValueError(
            "Expected a keras.Model with layers named "
            f"{list(STAGE_NAMES)}. Received: {backbone!r}"
        )
    found, missing = [], []
    for stage_name in STAGE_NAMES:
        try:
            found.append(get_layer(stage_name))
        except ValueError:
            missing.append(stage_name)
    if missing:
        raise ValueError(
            f"Backbone {getattr(backbone, 'name', backbone)!r} lacks the stage "
            f"layer(s) {missing}. Stage-wise features need a backbone built as "
            f"a chain of layers named {list(STAGE_NAMES)}, such as "
            "`keras_amix.backbones.resnet(...)`."
        )
    return found


def _stage_index(stage, arg="stage"):
    if stage not in STAGE_NAMES:
        raise ValueError(
            f"Invalid `{arg}`: {stage!r}. Allowed values: {list(STAGE_NAMES)}."
        )
    return STAGE_NAMES.index(stage)


def run_stages(backbone, x, start="stem", stop="stage4", training=None):
    """Applies the backbone's stages `start` .. `stop` (both inclusive) to `x`.

    Works eagerly, inside a compiled step and on symbolic Keras tensors.
    `run_stages(b, x)` equals `b(x)`; `run_stages(b, z, start="stage4")`
    continues from stage-3 features `z`.
    """
    i, j = _stage_index(start, "start"), _stage_index(stop, "stop")
    if i > j:
        raise ValueError(
            f"`start` must not come after `stop`. Received: start={start!r}, "
            f"stop={stop!r}; order is {list(STAGE_NAMES)}."
        )
    for layer in stages(backbone)[i : j + 1]:
        x = layer(x, training=training)
    return x


def _stage_output_shape(backbone, stage, size):
    layers = stages(backbone)
    j = _stage_index(stage)
    channels = backbone.inputs[0].shape[-1] if getattr(backbone, "inputs", None) else 3
    shape = (1, size, size, channels)
    for layer in layers[: j + 1]:
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def output_stride(backbone, stage):
    """Total spatial stride of `stage`'s output relative to the input image.

    CIFAR stem: stem 1, stage1 1, stage2 2, stage3 4, stage4 8.
    ImageNet stem: stem 4, stage1 4, stage2 8, stage3 16, stage4 32.
    """
    size = 1024  # a power of two: ceil-mode strides divide it exactly
    out = _stage_output_shape(backbone, stage, size)[1]
    return size // out


def feature_channels(backbone, stage):
    """Number of channels of `stage`'s output feature map."""
    return int(_stage_output_shape(backbone, stage, 64)[-1])
