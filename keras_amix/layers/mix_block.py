"""Mix Block (AutoMix) and Mix Block+ (AMix) as one layer with switches."""

import math

import keras
import numpy as np
from keras import ops

from keras_amix.losses import mask as mask_losses
from keras_amix.mixers import checks

# Where an official value comes from: OpenMixup (Westlake-AI/openmixup, snapshot
# 37e1372), files abbreviated as
#   [pmix]    openmixup/models/heads/pmix_block.py (PixelMixBlock),
#   [neck]    openmixup/models/necks/conv_necks.py (ConvNeck, the non-linear value),
#   [model]   openmixup/models/classifiers/automix.py (AutoMixup),
#   [automix] configs/classification/cifar100/automix/basic/r18_l2_a2_near_L1_01_mlr5e_2.py,
#   [samix]   configs/classification/cifar100/samix/basic/
#             r18_l2_a2_bili_val_dp0_mul_x_cat_L1_var_01_mlr5e_2.py.
# BatchNorm eps 1e-5 / momentum 0.1 are PyTorch's nn.BatchNorm2d defaults (the configs
# give norm_cfg=dict(type='BN') without them); Keras' momentum is 1 - PyTorch's.
PRESETS = {
    # AutoMix's Mix Block: every Table-8 switch off.
    "automix": dict(
        lam_encoding="concat",
        gamma="learned",
        lam_rescale_k=None,
        content="linear",
        activation="relu",
        value_bias=True,
        norm_epsilon=1e-3,
        norm_momentum=0.99,
        dropout=0.0,
        attention="cross",
        upsample="nearest",
        mask_loss="mean",
        mask_loss_weight=0.1,
        mean_margin=0.1,
        var_weight=2.0,
        var_center="sample",
        mean_reduction="batch",
        lam_adjust_prob=0.0,
        lam_margin=0.0,
    ),
    # AMix's Mix Block+: every Table-8 switch on (paper section 3.2).
    "amix": dict(
        lam_encoding="adaptive",
        gamma="learned",
        lam_rescale_k=None,
        content="nonlinear",
        activation="relu",
        value_bias=True,
        norm_epsilon=1e-3,
        norm_momentum=0.99,
        dropout=0.1,
        attention="global",
        upsample="bilinear",
        mask_loss="mean+var",
        mask_loss_weight=0.1,
        mean_margin=0.1,
        var_weight=2.0,
        var_center="sample",
        mean_reduction="batch",
        lam_adjust_prob=1.0,
        lam_margin=0.0,
    ),
    # The official AutoMix CIFAR-100 config.
    "automix_official": dict(
        lam_encoding="none",  # [automix] 28-29: lam_concat=False, lam_mul=False
        gamma="learned",  # unused without the adaptive encoding
        lam_rescale_k=None,  # [automix] 29: lam_mul_k=-1
        content="linear",  # [automix] 30: value_neck_cfg=None -> one nn.Conv2d, [pmix] 132-137
        activation="relu",  # unused by the linear content
        value_bias=True,  # [pmix] 133-137: nn.Conv2d keeps its default bias=True
        norm_epsilon=1e-5,  # PyTorch BatchNorm2d; unused by the linear content
        norm_momentum=0.9,  # PyTorch momentum 0.1; unused by the linear content
        dropout=0.0,  # [pmix] 133-137: no dropout after the linear value
        attention="cross",  # [automix] 31: x_qk_concat=False, one shared query conv, [pmix] 306-309
        upsample="nearest",  # [automix] 27: unsampling_mode=['nearest']
        mask_loss="mean",  # [automix] 33: mask_loss_mode="L1"
        mask_loss_weight=0.1,  # [automix] 13: mask_loss=0.1, applied at [model] 555-558
        mean_margin=0.1,  # [automix] 33: mask_loss_margin=0.1
        var_weight=2.0,  # unused by "mean"; [pmix] 372 would use 2
        var_center="batch",  # unused by "mean"; [pmix] 372 would centre on the batch mean
        mean_reduction="batch",  # [pmix] 361: one mean over batch and pixels, one lam
        lam_adjust_prob=0.0,  # [automix] 14: mask_adjust=0
        lam_margin=0.08,  # [automix] 15: lam_margin=0.08
    ),
    # The official SAMix CIFAR-100 config (SAMix is AMix's earlier name).
    "amix_official": dict(
        lam_encoding="adaptive",  # [samix] 37: lam_mul=True, lam_residual=True, [pmix] 266-268
        gamma=1.0,  # [samix] 37: lam_mul=True -> float(True) = 1.0 fixed, [pmix] 93
        lam_rescale_k=0.25,  # [samix] 37: lam_mul_k=0.25, [pmix] 223-228, 260-262
        content="nonlinear",  # [samix] 7-12, 38: ConvNeck, 2 layers, hid 128 = 256 / 2
        activation="elu",  # [neck] 47: act_cfg default ELU; [samix] 7-12 does not set it
        value_bias=False,  # [neck] 49, 102: with_bias=False on *both* convs; [samix] does not set it
        norm_epsilon=1e-5,  # [samix] 11: norm_cfg=dict(type='BN'), PyTorch's eps
        norm_momentum=0.9,  # PyTorch momentum 0.1
        dropout=0.0,  # [samix] 12: with_last_dropout=0
        attention="global",  # [samix] 39: x_qk_concat=True, separate key conv, [pmix] 143-152
        upsample="bilinear",  # [samix] 35: unsampling_mode=['bilinear']
        mask_loss="mean+var",  # [samix] 41: mask_loss_mode="L1+Variance"
        mask_loss_weight=0.1,  # [samix] 21: mask_loss=0.1, applied at [model] 555-558
        mean_margin=0.1,  # [samix] 41: mask_loss_margin=0.1
        var_weight=2.0,  # [pmix] 369-372: L1 - 2 * Var
        var_center="batch",  # [pmix] 372: sum((mask - m_mean)^2) / (n h w), m_mean of the batch
        mean_reduction="batch",  # [pmix] 361: one mean over batch and pixels, one lam
        # Not confirmed: [samix] 22 sets mask_adjust=0; its comment says "0.25 for CIFAR",
        # which is the value taken here.
        lam_adjust_prob=0.25,
        lam_margin=0.08,  # [samix] 23: lam_margin=0.08
    ),
}

# The values each string-valued switch allows.
CHOICES = {
    "lam_encoding": ("none", "concat", "adaptive"),
    "content": ("linear", "nonlinear"),
    "activation": ("relu", "elu"),
    "attention": ("cross", "global"),
    "upsample": ("nearest", "bilinear"),
    "mask_loss": ("mean", "mean+var"),
    "var_center": mask_losses.VAR_CENTERS,
    "mean_reduction": mask_losses.MEAN_REDUCTIONS,
}

SWITCHES = tuple(PRESETS["amix"].keys())


class _FromPreset:
    """The default of every `MixBlock` switch: take the preset's value."""

    def __repr__(self):
        return "<the preset's>"


FROM_PRESET = _FromPreset()
# The `mask_loss` switch is stored as `mask_loss_mode`: `mask_loss` is the method.
_ATTRIBUTE = {"mask_loss": "mask_loss_mode"}


@keras.saving.register_keras_serializable(package="keras_amix")
class UnitInterval(keras.constraints.Constraint):
    """Clips a weight into ``[0, 1]`` after each optimizer update."""

    def __call__(self, w):
        return ops.clip(w, 0.0, 1.0)

    def get_config(self):
        return {}


def _is_number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _concrete_value(x):
    """The numpy value of ``x`` when it is concrete (eager), else ``None``."""
    if _is_number(x) or isinstance(x, np.ndarray):
        return np.asarray(x, dtype="float64")
    value = checks.concrete_value(x)
    return None if value is None else value.astype("float64")


def _check_lam(lam, where, batch_size=None):
    """ValueError for a ``lam`` outside [0, 1] (concrete values) or of the wrong length.

    ``lam`` may be a scalar, ``(1,)``, ``(B,)`` or ``(B, 1)``; ``batch_size``
    (static, or None when unknown) is the batch of the features / mask.
    """
    shape = tuple(np.shape(lam)) if not hasattr(lam, "shape") else tuple(lam.shape)
    length = shape[0] if shape else None
    if len(shape) > 2 or (len(shape) == 2 and shape[1] not in (1, None)):
        raise ValueError(
            f"`lam` passed to MixBlock.{where} must be a scalar or have shape (B,); "
            f"received lam.shape={shape}."
        )
    if batch_size is not None and length is not None and length not in (1, batch_size):
        raise ValueError(
            f"`lam` passed to MixBlock.{where} must be a scalar or hold one value per "
            f"sample (length {batch_size}, the batch size); received lam.shape={shape}."
        )
    value = _concrete_value(lam)
    if value is None:
        return
    if value.size and not np.all((value >= 0.0) & (value <= 1.0)):
        raise ValueError(
            f"`lam` passed to MixBlock.{where} must lie in [0, 1]; received lam={value.tolist()}."
        )


_FEATURE_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
                   "float32", "float64")


def _batch_of(mask):
    shape = np.shape(mask) if not hasattr(mask, "shape") else mask.shape
    return shape[0] if len(shape) else None


def _check_image_size(image_size):
    if (
        image_size is None
        or not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, (int, np.integer)) and s > 0 for s in image_size)
    ):
        raise ValueError(
            "`image_size` must be a tuple of two positive ints (H, W); "
            f"received image_size={image_size!r}."
        )


def _lam_as_column(lam, ndim):
    """float32 ``lam`` of shape (1 or B,) + (1,) * (ndim - 1) for broadcasting."""
    lam = ops.cast(ops.convert_to_tensor(lam), "float32")
    if len(lam.shape) > 2 or (len(lam.shape) == 2 and lam.shape[-1] not in (1, None)):
        raise ValueError(
            f"`lam` must be a scalar or have shape (B,); received shape {tuple(lam.shape)}."
        )
    return ops.reshape(lam, (-1,) + (1,) * (ndim - 1))


LAM_RESCALE_K_MAX = 10.0  # the official code clips k to 10 ([pmix] 107)


def _check_lam_rescale_k(k):
    if not (_is_number(k) and 0.0 <= k <= LAM_RESCALE_K_MAX):
        raise ValueError(
            f"`lam_rescale_k` must be None or a float in [0, {LAM_RESCALE_K_MAX:g}]; "
            f"received lam_rescale_k={k!r}."
        )


def rescale_lambda(lam, k):
    """SAMix's lambda rescaling for the adaptive lambda encoding.

    With ``k' = k + 1``::

        lam' = (4/3 lam^3 - 2 lam^2 + k' lam) / (k' - 2/3)

    Its derivative is ``((2 lam - 1)^2 + k) / (k' - 2/3) >= 0``, so on
    ``[0, 1]`` it is increasing, fixes 0, 1/2 and 1, and is symmetric:
    ``lam'(1 - lam) = 1 - lam'(lam)``. A small ``k`` pulls ``lam`` towards
    1/2 (``k = 0.25``: 0.3 -> 0.396); ``k -> inf`` gives the identity.

    Args:
        lam: scalar or tensor of mixing ratios in ``[0, 1]``.
        k: a float in ``[0, 10]`` (the official CIFAR value is 0.25).

    Returns:
        float32 tensor of the shape of ``lam``.

    Reference:
        OpenMixup ``PixelMixBlock.rescale_lam_mult`` (SAMix, arXiv:2111.15454).
    """
    _check_lam_rescale_k(k)
    k1 = float(k) + 1.0
    lam = ops.cast(ops.convert_to_tensor(lam), "float32")
    return lam * (k1 + lam * (lam * (4.0 / 3.0) - 2.0)) / (k1 - 2.0 / 3.0)


def _validate_switches(switches):
    """ValueError naming the first bad switch, its value and what is allowed."""
    for name, allowed in CHOICES.items():
        if switches[name] not in allowed:
            raise ValueError(
                f"`{name}` must be one of {allowed}; received {name}={switches[name]!r}."
            )
    gamma = switches["gamma"]
    if not (gamma == "learned" or (_is_number(gamma) and 0.0 <= gamma <= 1.0)):
        raise ValueError(
            "`gamma` must be 'learned' or a float in [0, 1]; "
            f"received gamma={gamma!r}."
        )
    k = switches["lam_rescale_k"]
    if k is not None:
        _check_lam_rescale_k(k)
        if switches["lam_encoding"] != "adaptive":
            raise ValueError(
                "`lam_rescale_k` rescales lam for lam_encoding='adaptive' only; received "
                f"lam_rescale_k={k!r} with lam_encoding={switches['lam_encoding']!r} "
                "(pass lam_rescale_k=None)."
            )
    if not isinstance(switches["value_bias"], (bool, np.bool_)):
        raise ValueError(
            f"`value_bias` must be True or False; received value_bias={switches['value_bias']!r}."
        )
    epsilon = switches["norm_epsilon"]
    if not (_is_number(epsilon) and 0.0 < epsilon < math.inf):
        raise ValueError(
            f"`norm_epsilon` must be a float > 0; received norm_epsilon={epsilon!r}."
        )
    momentum = switches["norm_momentum"]
    if not (_is_number(momentum) and 0.0 <= momentum < 1.0):
        raise ValueError(
            "`norm_momentum` must be a float in [0, 1) (Keras convention: the weight of the "
            "old moving statistics, 1 - PyTorch's momentum); "
            f"received norm_momentum={momentum!r}."
        )
    for name in ("dropout", "lam_adjust_prob"):
        value = switches[name]
        if not (_is_number(value) and 0.0 <= value <= 1.0):
            raise ValueError(
                f"`{name}` must be a float in [0, 1]; received {name}={value!r}."
            )
    if switches["dropout"] >= 1.0:
        raise ValueError(f"`dropout` must be < 1; received dropout={switches['dropout']!r}.")
    if not (_is_number(switches["lam_margin"]) and 0.0 <= switches["lam_margin"] < 0.5):
        raise ValueError(
            "`lam_margin` must be a float in [0, 0.5); "
            f"received lam_margin={switches['lam_margin']!r}."
        )
    for name in ("mask_loss_weight", "mean_margin", "var_weight"):
        if not _is_number(switches[name]):
            raise ValueError(f"`{name}` must be a number; received {name}={switches[name]!r}.")
    if switches["mask_loss_weight"] < 0 or switches["mean_margin"] < 0:
        raise ValueError(
            "`mask_loss_weight` and `mean_margin` must be >= 0; received "
            f"mask_loss_weight={switches['mask_loss_weight']!r}, "
            f"mean_margin={switches['mean_margin']!r}."
        )


def _normalise_switch(name, value):
    """The value stored (and returned by get_config) for a validated switch."""
    if name in CHOICES or (name == "gamma" and value == "learned"):
        return value
    if name == "value_bias":
        return bool(value)
    if name == "lam_rescale_k" and value is None:
        return None
    return float(value)


@keras.saving.register_keras_serializable(package="keras_amix")
class MixBlock(keras.layers.Layer):
    """Learnable pixel-mask generator: AutoMix's Mix Block and AMix's Mix Block+.

    Given the stage-``l`` feature maps of two images ``z_a`` and ``z_b`` (the
    second already paired, e.g. ``z_a[perm]``) and the mixing ratio ``lam``,
    the layer predicts a mask ``s_lam`` of shape ``(B, H, W, 1)`` in ``[0, 1]``:
    the weight of image ``a`` in ``x_mix = s_lam * x_a + (1 - s_lam) * x_b``.

    Computation (DESIGN.md section 4):

    1. lam encoding: ``"concat"`` appends a constant channel ``lam`` to
       ``z_a`` and ``1 - lam`` to ``z_b``; ``"adaptive"`` scales
       ``z_a <- (1 + gamma * lam) z_a`` and ``z_b <- (1 + gamma (1 - lam)) z_b``,
       with ``lam`` first replaced by `rescale_lambda` ``(lam, k)`` when
       ``lam_rescale_k=k`` is set; ``"none"`` leaves them.
    2. value ``v`` from the ``z_b`` side: ``"linear"`` 1x1 conv C -> 1, or
       ``"nonlinear"`` 1x1 conv C -> C/2, BatchNorm, activation, 1x1 conv
       C/2 -> 1; then Dropout(``dropout``).
    3. attention: ``"cross"``: one shared 1x1 projection ``W_P`` (C -> C/2),
       ``q = W_P z_a``, ``k = W_P z_b``; ``"global"``: ``z_cat = concat(z_a,
       z_b)`` (2C channels), ``q = W_q z_cat``, ``k = W_k z_cat``.
    4. ``P = softmax(q k^T / sqrt(C/2))`` over the last axis (an ``n x n``
       matrix per sample, ``n = h * w``), computed in float32 even under mixed
       precision; logits ``= P v`` reshaped to ``(h, w, 1)``.
    5. the *logits* are upsampled to ``image_size`` (``"nearest"`` or
       ``"bilinear"``), then ``s_{1-lam} = sigmoid(logits)`` and
       ``s_lam = 1 - s_{1-lam}``.

    The returned mask is always float32.

    Presets (see `from_preset` and `PRESETS`): ``"automix"`` and ``"amix"``
    follow the papers; ``"automix_official"`` and ``"amix_official"`` hold
    the official code's CIFAR-100 values. Every switch below defaults to the
    preset's value; the paper presets keep the behaviour the layer had
    before the official-code switches existed.

    Args:
        preset: ``"amix"`` (Mix Block+, all Table-8 switches on),
            ``"automix"`` (all off), ``"amix_official"`` or
            ``"automix_official"``. Every switch below is a keyword argument
            whose default is the preset's value; one given explicitly
            overrides it (``MixBlock("amix", attention="cross")`` is Table 8's
            "w/o global attention" row).
        in_channels: optional expected channel count ``C`` of the features;
            checked at build time.
        lam_encoding: ``"none"``, ``"concat"`` or ``"adaptive"``.
        gamma: ``"learned"`` (a scalar weight initialised to 0, kept in
            ``[0, 1]`` by a constraint and clamped where used) or a float in
            ``[0, 1]`` (the official code fixes ``gamma = 1``). Only used by
            ``lam_encoding="adaptive"``.
        lam_rescale_k: ``None`` (paper: ``lam`` used as is) or a float ``k``
            in ``[0, 10]``: SAMix's rescaling `rescale_lambda` of ``lam``
            before the adaptive encoding (official CIFAR ``k = 0.25``). Only
            allowed with ``lam_encoding="adaptive"``.
        content: ``"linear"`` or ``"nonlinear"``.
        activation: ``"relu"`` (paper) or ``"elu"`` (official code).
        value_bias: whether the value 1x1 convolutions carry a bias: the
            ``"linear"`` value conv, and *both* convs of the ``"nonlinear"``
            value (the one before BatchNorm and the last C/2 -> 1 one). True
            (paper presets) or False. The official ``ConvNeck`` builds every
            conv with ``bias=with_bias`` and ``with_bias=False`` by default,
            so its non-linear value has no bias at all, not only before the
            norm; the official linear value is a plain ``nn.Conv2d`` with a
            bias. The query / key convs always have a bias (the official
            ``ConvModule(bias='auto')`` without a norm keeps it).
        norm_epsilon: epsilon of the value BatchNorm (Keras' 1e-3; PyTorch
            1e-5). Only used by ``content="nonlinear"``.
        norm_momentum: momentum of the value BatchNorm in Keras' convention,
            the weight of the old moving statistics (Keras' 0.99; PyTorch's
            default momentum 0.1 is 0.9 here). Only used by
            ``content="nonlinear"``. (PyTorch also updates its running
            variance with the unbiased batch variance; Keras uses the biased
            one.)
        dropout: dropout rate on the value map (paper 0.1, official CIFAR 0).
        attention: ``"cross"`` or ``"global"``.
        upsample: ``"nearest"`` or ``"bilinear"``.
        mask_loss: ``"mean"`` or ``"mean+var"``.
        mask_loss_weight: ``beta`` (0.1).
        mean_margin: ``epsilon`` of ``L_mean`` (0.1).
        var_weight: ``L_mask = beta (L_mean - var_weight * L_var)``; 2.0 is the
            official sign and weight, a negative value gives the paper's
            ``+ L_var``.
        var_center: centring of ``L_var``: ``"sample"`` (each mask around its
            own mean, the paper's formula) or ``"batch"`` (around the mean of
            the whole batch of masks, the official ``L1+Variance``); see
            `keras_amix.losses.mask.mask_variance`. Only used by
            ``mask_loss="mean+var"``.
        mean_reduction: ``"batch"`` (compare the batch-and-pixel mean of the
            mask with the batch-mean lam; DESIGN and official code) or
            ``"sample"`` (per-image means, the paper's ``mu_i``).
        lam_adjust_prob: probability (drawn once per batch) that
            `mask_for_encoder` applies lam adjusting (paper 1.0, official
            0 to 0.25).
        lam_margin: `mask_for_encoder` falls back to plain MixUp (constant mask
            ``lam``) for samples with ``lam < lam_margin`` or
            ``lam > 1 - lam_margin`` (official 0.08; 0 disables).
        seed: optional int seeding initialisers, dropout and the per-batch
            lam-adjust draw.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        features_a: ``(B, h, w, C)`` features of the first images.
        features_b: ``(B, h, w, C)`` features of the paired images.
        lam: scalar or ``(B,)`` mixing ratio in ``[0, 1]`` (weight of ``a``).
        image_size: ``(H, W)`` of the images to mix (python ints).
        training: enables dropout and BatchNorm batch statistics.

    Example:

    >>> block = MixBlock(preset="amix")
    >>> z = np.random.rand(2, 4, 4, 8).astype("float32")
    >>> mask = block(z, z[::-1], 0.3, image_size=(16, 16), training=True)
    >>> tuple(mask.shape)
    (2, 16, 16, 1)
    >>> loss = block.mask_loss(mask, 0.3)
    >>> encoder_mask = block.mask_for_encoder(mask, 0.3)  # stop-gradient

    Reference:
        AMix paper section 3.2, eq. 5 (Mix Block+), Table 8 (one switch per
        row); AutoMix (Liu et al., 2021) for the Mix Block; OpenMixup's
        ``PixelMixBlock`` and ``ConvNeck`` for the official-code switches.
    """

    def __init__(
        self,
        preset="amix",
        *,
        lam_encoding=FROM_PRESET,
        gamma=FROM_PRESET,
        lam_rescale_k=FROM_PRESET,
        content=FROM_PRESET,
        activation=FROM_PRESET,
        value_bias=FROM_PRESET,
        norm_epsilon=FROM_PRESET,
        norm_momentum=FROM_PRESET,
        dropout=FROM_PRESET,
        attention=FROM_PRESET,
        upsample=FROM_PRESET,
        mask_loss=FROM_PRESET,
        mask_loss_weight=FROM_PRESET,
        mean_margin=FROM_PRESET,
        var_weight=FROM_PRESET,
        var_center=FROM_PRESET,
        mean_reduction=FROM_PRESET,
        lam_adjust_prob=FROM_PRESET,
        lam_margin=FROM_PRESET,
        in_channels=None,
        seed=None,
        **kwargs,
    ):
        given = locals()  # the arguments: every switch is a parameter of that name
        if preset not in PRESETS:
            raise ValueError(
                f"`preset` must be one of {tuple(PRESETS)}; received preset={preset!r}."
            )
        switches = {name: PRESETS[preset][name] if given[name] is FROM_PRESET else given[name]
                    for name in SWITCHES}
        _validate_switches(switches)
        if in_channels is not None and (not isinstance(in_channels, int) or in_channels < 1):
            raise ValueError(
                f"`in_channels` must be a positive int or None; received in_channels={in_channels!r}."
            )
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"`seed` must be an int or None; received seed={seed!r}.")
        super().__init__(**kwargs)
        self._allow_non_tensor_positional_args = True
        self._convert_input_args = False

        self.preset = preset
        self.in_channels = in_channels
        self.seed = seed
        for name in SWITCHES:
            setattr(self, _ATTRIBUTE.get(name, name), _normalise_switch(name, switches[name]))
        self.seed_generator = keras.random.SeedGenerator(seed)

    @classmethod
    def from_preset(cls, name, /, **overrides):
        """A MixBlock from one of `PRESETS`; ``overrides`` are switches (or layer kwargs).

        The same as ``MixBlock(preset=name, **overrides)``, with the same
        validation. ``name`` is positional-only, so that ``name="..."`` in
        ``overrides`` still names the layer. Presets:

        - ``"automix"``: AutoMix's Mix Block as in the paper (every Table-8
          switch off).
        - ``"amix"``: AMix's Mix Block+ as in the paper (every Table-8 switch
          on).
        - ``"automix_official"``: the official AutoMix CIFAR-100 config: no
          lam encoding, linear content, nearest upsampling, ``"mean"`` loss,
          ``lam_margin=0.08``, no lam adjusting, PyTorch BatchNorm settings.
        - ``"amix_official"``: the official SAMix CIFAR-100 config: adaptive
          lam encoding with ``gamma=1`` and ``lam_rescale_k=0.25``, nonlinear
          ELU content without biases or dropout, global attention, bilinear
          upsampling, ``"mean+var"`` with ``var_center="batch"``,
          ``lam_margin=0.08``, ``lam_adjust_prob=0.25``, PyTorch BatchNorm
          settings.

        See `PRESETS` for every value and the line of the official code it
        comes from.

        Example:

        >>> block = MixBlock.from_preset("amix_official", lam_adjust_prob=0.0)
        >>> block.get_config()["lam_rescale_k"]
        0.25
        """
        if "preset" in overrides:
            raise ValueError(
                "`MixBlock.from_preset` takes the preset as `name`; received also "
                f"preset={overrides['preset']!r}."
            )
        return cls(preset=name, **overrides)

    # ------------------------------------------------------------------ build

    def _initializer(self, offset):
        seed = None if self.seed is None else self.seed + offset
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.01, seed=seed)

    def _conv(self, filters, name, offset, use_bias=True):
        return keras.layers.Conv2D(
            filters,
            1,
            use_bias=use_bias,
            kernel_initializer=self._initializer(offset),
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "MixBlock expects features of rank 4 (B, h, w, C); "
                f"received shape {tuple(input_shape)}."
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("MixBlock needs a known channel dimension; received None.")
        if self.in_channels is not None and channels != self.in_channels:
            raise ValueError(
                f"MixBlock was created with in_channels={self.in_channels} but the features "
                f"have {channels} channels (shape {tuple(input_shape)})."
            )
        self.channels = channels
        self.inter_channels = max(channels // 2, 1)
        extra = 1 if self.lam_encoding == "concat" else 0
        side = channels + extra
        spatial = tuple(input_shape[:3])

        if self.lam_encoding == "adaptive" and self.gamma == "learned":
            self.gamma_weight = self.add_weight(
                name="gamma",
                shape=(),
                initializer="zeros",
                constraint=UnitInterval(),
                trainable=True,
            )

        if self.content == "linear":
            self.value_conv = self._conv(1, "value", 0, use_bias=self.value_bias)
            self.value_conv.build(spatial + (side,))
            self.value_layers = [self.value_conv]
        else:
            self.value_conv1 = self._conv(
                self.inter_channels, "value_1", 0, use_bias=self.value_bias
            )
            self.value_norm = keras.layers.BatchNormalization(
                momentum=self.norm_momentum,
                epsilon=self.norm_epsilon,
                gamma_initializer="ones",
                beta_initializer="zeros",
                dtype=self.dtype_policy,
                name="value_norm",
            )
            self.value_activation = keras.layers.Activation(
                self.activation, dtype=self.dtype_policy, name="value_activation"
            )
            self.value_conv2 = self._conv(1, "value_2", 1, use_bias=self.value_bias)
            self.value_conv1.build(spatial + (side,))
            self.value_norm.build(spatial + (self.inter_channels,))
            self.value_conv2.build(spatial + (self.inter_channels,))
            self.value_layers = [
                self.value_conv1,
                self.value_norm,
                self.value_activation,
                self.value_conv2,
            ]
        self.value_dropout = keras.layers.Dropout(
            self.dropout, seed=self.seed, dtype=self.dtype_policy, name="value_dropout"
        )

        if self.attention == "cross":
            self.query_conv = self._conv(self.inter_channels, "projection", 2)
            self.query_conv.build(spatial + (side,))
            self.key_conv = self.query_conv  # one shared W_P
        else:
            self.query_conv = self._conv(self.inter_channels, "query", 2)
            self.key_conv = self._conv(self.inter_channels, "key", 3)
            self.query_conv.build(spatial + (2 * side,))
            self.key_conv.build(spatial + (2 * side,))
        self.built = True

    # ------------------------------------------------------------------- call

    def _gamma_value(self):
        if self.gamma != "learned":
            return ops.convert_to_tensor(self.gamma, "float32")
        g = ops.cast(self.gamma_weight, "float32")
        # Clamp the value to [0, 1] but let the gradient through unchanged
        # (a plain clip has zero or halved gradient at the initial value 0).
        return g + ops.stop_gradient(ops.clip(g, 0.0, 1.0) - g)

    def _validate_features(self, features_a, features_b):
        for name, f in (("features_a", features_a), ("features_b", features_b)):
            if len(f.shape) != 4:
                raise ValueError(
                    f"`{name}` must have rank 4 (B, h, w, C); received shape {tuple(f.shape)}."
                )
            dtype = keras.backend.standardize_dtype(f.dtype)
            if dtype not in _FEATURE_DTYPES:
                raise ValueError(
                    f"`{name}` must have a real numeric dtype, one of {_FEATURE_DTYPES}; "
                    f"received {name}.dtype={dtype}."
                )
        batch_a, batch_b = features_a.shape[0], features_b.shape[0]
        if batch_a is not None and batch_b is not None and batch_a != batch_b:
            raise ValueError(
                "`features_a` and `features_b` must have the same batch size (features_b "
                "is the paired batch, e.g. features_a[perm]); received shapes "
                f"{tuple(features_a.shape)} and {tuple(features_b.shape)}."
            )
        if features_a.shape[1:] != features_b.shape[1:] and None not in (
            features_a.shape[1:] + features_b.shape[1:]
        ):
            raise ValueError(
                "`features_a` and `features_b` must have the same (h, w, C); received "
                f"{tuple(features_a.shape)} and {tuple(features_b.shape)}."
            )
        if features_b.shape[-1] != features_a.shape[-1]:
            raise ValueError(
                "`features_a` and `features_b` must have the same channels; received "
                f"{features_a.shape[-1]} and {features_b.shape[-1]}."
            )
        if self.in_channels is not None and features_a.shape[-1] != self.in_channels:
            raise ValueError(
                f"MixBlock was created with in_channels={self.in_channels} but the features "
                f"have {features_a.shape[-1]} channels."
            )

    def __call__(self, features_a, features_b, lam, image_size=None, **kwargs):
        features = []
        for name, f in (("features_a", features_a), ("features_b", features_b)):
            if not isinstance(f, keras.KerasTensor):
                f = ops.convert_to_tensor(f)
            if len(f.shape) != 4:
                raise ValueError(
                    f"`{name}` must have rank 4 (B, h, w, C); received shape {tuple(f.shape)}."
                )
            features.append(f)
        return super().__call__(*features, lam, image_size=image_size, **kwargs)

    def call(self, features_a, features_b, lam, image_size=None, training=None):
        _check_image_size(image_size)
        self._validate_features(features_a, features_b)
        _check_lam(lam, "call", features_a.shape[0] or features_b.shape[0])
        dtype = self.compute_dtype
        za = ops.cast(features_a, dtype)
        zb = ops.cast(features_b, dtype)
        lam_col = _lam_as_column(lam, 4)  # float32, (1 or B, 1, 1, 1)
        lam_c = ops.cast(lam_col, dtype)

        # 1. lam encoding.
        if self.lam_encoding == "concat":
            ones = ops.ones_like(za[..., :1])
            za = ops.concatenate([za, ones * lam_c], axis=-1)
            zb = ops.concatenate([zb, ones * (1.0 - lam_c)], axis=-1)
        elif self.lam_encoding == "adaptive":
            if self.lam_rescale_k is not None:
                lam_c = ops.cast(rescale_lambda(lam_col, self.lam_rescale_k), dtype)
            gamma = ops.cast(self._gamma_value(), dtype)
            za = (1.0 + gamma * lam_c) * za
            zb = (1.0 + gamma * (1.0 - lam_c)) * zb

        # 2. value from the z_b side.
        v = zb
        for layer in self.value_layers:
            if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Dropout)):
                v = layer(v, training=training)
            else:
                v = layer(v)
        v = self.value_dropout(v, training=training)

        # 3. query / key projections.
        if self.attention == "cross":
            q = self.query_conv(za)
            k = self.key_conv(zb)
        else:
            z_cat = ops.concatenate([za, zb], axis=-1)
            q = self.query_conv(z_cat)
            k = self.key_conv(z_cat)

        # 4. attention in float32.
        shape = ops.shape(q)
        h, w = shape[1], shape[2]
        n = h * w
        q = ops.reshape(ops.cast(q, "float32"), (-1, n, self.inter_channels))
        k = ops.reshape(ops.cast(k, "float32"), (-1, n, self.inter_channels))
        v = ops.reshape(ops.cast(v, "float32"), (-1, n, 1))
        scores = ops.matmul(q, ops.transpose(k, (0, 2, 1))) / math.sqrt(self.inter_channels)
        attention = ops.softmax(scores, axis=-1)
        logits = ops.reshape(ops.matmul(attention, v), (-1, h, w, 1))

        # 5. upsample the logits, then sigmoid.
        logits = ops.image.resize(
            logits,
            size=tuple(int(s) for s in image_size),
            interpolation=self.upsample,
            data_format="channels_last",
        )
        # s_lam = 1 - sigmoid(x) = sigmoid(-x), computed without cancellation.
        return ops.sigmoid(-logits)

    def compute_output_spec(self, features_a, features_b, lam, image_size=None, training=None):
        _check_image_size(image_size)
        self._validate_features(features_a, features_b)
        _check_lam(lam, "call", features_a.shape[0] or features_b.shape[0])
        batch = features_a.shape[0]
        return keras.KerasTensor((batch, int(image_size[0]), int(image_size[1]), 1), "float32")

    # ------------------------------------------------------- mask utilities

    def mask_loss(self, mask, lam):
        """``mask_loss_weight * (L_mean - var_weight * L_var)`` as a float32 scalar.

        ``L_var`` (centred as ``var_center`` says) is included only for
        ``mask_loss="mean+var"``. See `keras_amix.losses.mask.mask_loss` for
        the reductions.
        """
        _check_lam(lam, "mask_loss", _batch_of(mask))
        return self._mask_loss(mask, lam)

    def _mask_loss(self, mask, lam):
        return mask_losses.mask_loss(
            mask,
            lam,
            mode=self.mask_loss_mode,
            weight=self.mask_loss_weight,
            margin=self.mean_margin,
            var_weight=self.var_weight,
            reduction=self.mean_reduction,
            var_center=self.var_center,
        )

    # One call per mask of a training step: `lam` is validated once, in `call`.
    def mask_and_loss(self, features_a, features_b, lam, image_size, training=True):
        """``(mask, mask_loss(mask, lam))``: the mask φ trains on and its mask loss."""
        mask = self(features_a, features_b, lam, image_size=image_size, training=training)
        return mask, self._mask_loss(mask, lam)

    def encoder_mask(self, features_a, features_b, lam, image_size, training=True):
        """``mask_for_encoder(self(features_a, features_b, lam), lam)``: the
        stop-gradient mask that mixes the encoder's inputs."""
        mask = self(features_a, features_b, lam, image_size=image_size, training=training)
        return self._mask_for_encoder(mask, lam)

    def mask_panels(self, features, images, lams, perm, adjust=False):
        """The masks and mixed images of pairs (i, perm[i]) in inference mode.

        `features` are the stage features of `images` (as the model's
        momentum or key encoder gives them); for each λ of `lams` the mask
        s_λ (weight of image i) and x = s_λ·x_i + (1 − s_λ)·x_perm(i).
        `adjust=True` draws the masks after λ adjusting (mean λ per image),
        as a model that always adjusts them mixes with them.
        Returns float32 numpy arrays (L, B, H, W, 1) and (L, B, H, W, C).
        """
        from keras_amix.mixers.primitives import mix_images

        images = ops.convert_to_tensor(images)
        perm = ops.convert_to_tensor(np.asarray(perm, "int32"))
        image_size = (int(images.shape[1]), int(images.shape[2]))
        features_b = ops.take(features, perm, axis=0)
        images_b = ops.take(images, perm, axis=0)
        masks, mixed = [], []
        for lam in lams:
            mask = self(features, features_b, lam, image_size=image_size, training=False)
            if adjust:
                mask = adjust_lambda(mask, lam)
            masks.append(ops.convert_to_numpy(mask).astype("float32"))
            mixed.append(ops.convert_to_numpy(mix_images(images, images_b, mask)))
        return np.stack(masks), np.stack(mixed).astype("float32")

    def adjust_lambda(self, mask, lam):
        """lam adjusting (paper section 3.2): per-sample mask mean becomes ``lam``.

        With ``mu_b`` the mean of ``s_lam`` for sample ``b``: if ``mu_b > lam``
        then ``s_lam <- s_lam * lam / mu_b``; if ``mu_b < lam`` then
        ``s_{1-lam} <- s_{1-lam} * (1 - lam) / (1 - mu_b)`` and
        ``s_lam = 1 - s_{1-lam}``. Both keep the mask in ``[0, 1]``.
        Returns a float32 mask of the same shape.
        """
        _check_lam(lam, "adjust_lambda", _batch_of(mask))
        return adjust_lambda(mask, lam)

    def mask_for_encoder(self, mask, lam):
        """The stop-gradient mask used to mix the encoder's (theta's) inputs.

        Applies lam adjusting with probability ``lam_adjust_prob`` (one draw
        per batch from the layer's seed generator), then replaces the mask by
        the constant ``lam`` (plain MixUp) for samples whose ``lam`` lies
        outside ``[lam_margin, 1 - lam_margin]``. Returns float32.
        """
        _check_lam(lam, "mask_for_encoder", _batch_of(mask))
        return self._mask_for_encoder(mask, lam)

    def _mask_for_encoder(self, mask, lam):
        mask = ops.stop_gradient(ops.cast(ops.convert_to_tensor(mask), "float32"))
        if self.lam_adjust_prob >= 1.0:
            mask = adjust_lambda(mask, lam)
        elif self.lam_adjust_prob > 0.0:
            draw = keras.random.uniform((), seed=self.seed_generator)
            mask = ops.where(draw < self.lam_adjust_prob, adjust_lambda(mask, lam), mask)
        if self.lam_margin > 0.0:
            lam_col = _lam_as_column(lam, len(mask.shape))
            outside = ops.logical_or(lam_col < self.lam_margin, lam_col > 1.0 - self.lam_margin)
            mask = ops.where(outside, ops.broadcast_to(lam_col, ops.shape(mask)), mask)
        return ops.stop_gradient(mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "preset": self.preset,
                "in_channels": self.in_channels,
                "seed": self.seed,
            }
        )
        config.update({name: getattr(self, _ATTRIBUTE.get(name, name)) for name in SWITCHES})
        return config


def adjust_lambda(mask, lam):
    """Rescale each mask so that its mean equals ``lam`` (see `MixBlock.adjust_lambda`)."""
    mask = ops.cast(ops.convert_to_tensor(mask), "float32")
    ndim = len(mask.shape)
    lam_col = _lam_as_column(lam, ndim)
    mu = ops.mean(mask, axis=tuple(range(1, ndim)), keepdims=True)
    larger = mu > lam_col
    smaller = mu < lam_col
    safe_mu = ops.where(larger, mu, 1.0)
    safe_one_minus_mu = ops.where(smaller, 1.0 - mu, 1.0)
    shrink = mask * (lam_col / safe_mu)
    grow = 1.0 - (1.0 - mask) * ((1.0 - lam_col) / safe_one_minus_mu)
    return ops.where(larger, shrink, ops.where(smaller, grow, mask))


def mask_statistics(mask):
    """Metrics of a batch of masks ``(B, H, W, 1)``.

    Returns a dict of float32 scalars: ``mask_mean`` (mean over batch and
    pixels) and ``mask_std`` (the spatial standard deviation of each mask,
    averaged over the batch: ~0 when the Mix Block collapsed to a constant
    mask, the known trivial solution).
    """
    mask = ops.cast(ops.convert_to_tensor(mask), "float32")
    flat = ops.reshape(mask, (ops.shape(mask)[0], -1))
    return {
        "mask_mean": ops.mean(flat),
        "mask_std": ops.mean(ops.std(flat, axis=1)),
    }
