"""Image classifier trained with an optional static mixup method."""

import keras
from keras import ops

from keras_amix import backbones as backbones_lib
from keras_amix import mixers as mixers_lib
from keras_amix import losses as losses_lib
from keras_amix.training.backend import input_gradient
from keras_amix.training.step import StepBatch, StepModel


def _check_rank4(images, name="images"):
    if len(images.shape) != 4:
        raise ValueError(
            f"`{name}` must be a rank-4 NHWC batch; received shape {tuple(images.shape)}."
        )


def soft_target_cross_entropy(labels, logits):
    """Batch mean of the soft-target cross-entropy."""
    return ops.mean(losses_lib.soft_target_cross_entropy(labels, logits))


@keras.saving.register_keras_serializable(package="keras_amix")
class MixupClassifier(StepModel):
    """A backbone, global average pooling and a linear head, trained with mixup.

    `fit` mixes each training batch with `mixer` (none: vanilla training) and
    minimises the soft-target cross-entropy against the mixed labels;
    `evaluate` and `predict` never mix. The model outputs logits.

    Args:
        backbone: a `keras_amix.backbones.resnet(...)` model (or any model with
            the stages `stem`, `stage1`..`stage4` when the mixer needs them:
            ManifoldMix mixes between stages).
        num_classes: int, number of classes (> 1).
        mixer: `None`, a registered mixer name (`keras_amix.mixers.available()`)
            or a mixer object.
        mixer_kwargs: dict of arguments for the mixer when `mixer` is a name.
        label_smoothing: float in [0, 1), applied to the targets before mixing.

    Call arguments:
        images: (B, H, W, C) normalised images.
        training: bool.

    Example:

    ```python
    backbone = keras_amix.backbones.resnet(18, width=16)
    model = keras_amix.models.MixupClassifier(backbone, 10, mixer="cutmix")
    model.compile(optimizer="sgd")
    model.fit(train_ds, validation_data=test_ds, epochs=10)
    ```

    Reference: Zhang et al. 2018 (MixUp) and the class-level baselines of the
    AMix paper, Tables 2-3.
    """

    nested_config_keys = ("backbone", "mixer")

    def __init__(self, backbone, num_classes, mixer=None, mixer_kwargs=None,
                 label_smoothing=0.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"`num_classes` must be an integer >= 2; received {num_classes!r}."
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1); received {label_smoothing!r}."
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.mixer_kwargs = dict(mixer_kwargs or {})
        if isinstance(mixer, str):
            mixer = mixers_lib.get(mixer, **self.mixer_kwargs)
        elif mixer_kwargs:
            raise ValueError(
                "`mixer_kwargs` is only used when `mixer` is a name; received a "
                f"mixer object {mixer!r} together with mixer_kwargs={mixer_kwargs!r}."
            )
        self.mixer = mixer
        self.label_smoothing = label_smoothing
        if mixer is not None and getattr(mixer, "mixes_hidden", False):
            self._stages = backbones_lib.stages(backbone)
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = keras.layers.Dense(num_classes, name="head")
        # Build now so that callbacks such as BackupAndRestore and weight
        # loading find every variable before the first batch.
        self.head.build((None, backbone.output_shape[-1]))
        self.built = True
        self.add_tracker(keras.metrics.Mean(name="loss"))
        self.add_tracker(keras.metrics.CategoricalAccuracy(name="top1"))

    def call(self, images, training=False):
        if isinstance(images, StepBatch):  # a batch of fit / evaluate
            return self.step_outputs(images, training)
        return self.head(self.pool(self.backbone(images, training=training)))

    # --------------------------------------------------------------- train
    def _targets(self, labels):
        labels = ops.cast(labels, "float32")
        if self.label_smoothing:
            labels = labels * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        return labels

    def _check_batch(self, images, labels):
        _check_rank4(images)
        if len(labels.shape) != 2 or labels.shape[-1] != self.num_classes:
            raise ValueError(
                f"`labels` must be one-hot or soft of shape (batch, {self.num_classes}); "
                f"received shape {tuple(labels.shape)}."
            )

    def train_outputs(self, x, y):
        self._check_batch(x, y)
        y = self._targets(y)
        mixer = self.mixer
        if mixer is None:
            logits = self(x, training=True)
        elif getattr(mixer, "mixes_hidden", False):
            logits, y = self._manifold_forward(x, y)
        elif getattr(mixer, "requires_saliency", False):
            saliency = self.saliency(x, y)
            x, y = mixer(x, y, training=True, saliency=saliency)
            logits = self(x, training=True)
        else:
            x, y = mixer(x, y, training=True)
            logits = self(x, training=True)
        # Training top-1 is measured against the argmax of the (mixed) target.
        return {"loss": soft_target_cross_entropy(y, logits), "top1": (y, logits)}

    def saliency(self, images, labels):
        """|d CE / d x| summed over channels: (B, H, W, 1), no gradient."""

        def loss_of(x):
            return soft_target_cross_entropy(labels, self(x, training=False))

        grad = input_gradient(loss_of, images)
        return ops.sum(ops.abs(grad), axis=-1, keepdims=True)

    # ManifoldMix's mixing points, by the index of the stage whose input they mix.
    _MIX_POINTS = {0: "input", 2: "stage1", 3: "stage2", 4: "stage3"}

    def _manifold_forward(self, x, y):
        """ManifoldMix: MixUp of the hidden features before a random stage.

        The drawn layer is a tensor inside compiled steps, so every candidate
        point calls `mixer.maybe_mix`, which keeps the mix only where the
        layer was drawn (branch-free, the same on every backend).
        """
        mixer = self.mixer
        params = mixer.sample_params(x, y)
        h = x
        for i, stage in enumerate(self._stages):
            point = self._MIX_POINTS.get(i)
            if point in mixer.layers:
                h = mixer.maybe_mix(h, point, params)
            h = stage(h, training=True)
        logits = self.head(self.pool(h))
        return logits, mixer.mix_labels(y, params)

    # ---------------------------------------------------------------- eval
    def test_outputs(self, x, y):
        y = ops.cast(y, "float32")
        logits = self(x, training=False)
        return {"loss": soft_target_cross_entropy(y, logits), "top1": (y, logits)}

    # ------------------------------------------------------- serialisation
    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            num_classes=self.num_classes,
            mixer=None if self.mixer is None else keras.saving.serialize_keras_object(self.mixer),
            label_smoothing=self.label_smoothing,
        )
        return config
