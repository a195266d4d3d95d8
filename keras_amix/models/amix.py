"""Supervised AutoMix / AMix training: an encoder and a Mix Block trained together."""

import keras
from keras import ops

from keras_amix import backbones as backbones_lib
from keras_amix import losses as losses_lib
from keras_amix.layers import MixBlock, adjust_lambda, mask_statistics
from keras_amix.mixers.primitives import mix_images, mix_labels, sample_lambda
from keras_amix.mixers.primitives import sample_permutation
from keras_amix.training.schedules import MomentumSchedule
from keras_amix.training.step import StepBatch, StepModel, ema_update

MIX_LOSSES = ("ce", "pbce", "ce+pbce", "bce", "ce+bce")


@keras.saving.register_keras_serializable(package="keras_amix")
class AMixClassifier(StepModel):
    """AutoMix / AMix: a classifier and a Mix Block that learns the mixing.

    Each training step (DESIGN §5, paper §3.2-3.3) draws two mixing ratios
    λ_φ, λ_θ ~ Beta(α, α) and two pairings, reads stage features of the
    *momentum* encoder θ_k, and lets the Mix Block φ predict a pixel mask for
    each. The online encoder θ_q trains on the clean batch (one-hot CE of the
    clean head) plus the images mixed with the stop-gradient mask of λ_θ
    (after λ adjusting and the λ margin; mixup CE of the mix head); the Mix
    Block trains on `mix_loss` of the momentum encoder and the EMA of the mix
    head on the images mixed with the mask of λ_φ, plus the mask loss.
    Gradients of the Mix Block's loss flow through the frozen momentum
    encoder into the pixels and reach only φ. Each optimizer update is
    followed by θ_k ← m θ_k + (1−m) θ_q (backbone and both heads), applied
    first thing in the next step, with m from `momentum_schedule` at the
    model's step counter (so a resumed run continues the schedule where it
    stopped). BatchNorm statistics of θ_k
    come from its own forward passes: the whole forward on the clean batch
    and the forward on the φ-mixed images, as in the official code.

    Separate learning rates for θ and φ: compile with
    `keras.optimizers.MultiOptimizer` and route variables whose path contains
    `"mix_block"` to φ's optimizer (see `experiments/train_supervised.py`).

    Args:
        backbone: a `keras_amix.backbones.resnet(...)` model (named stages).
        num_classes: int >= 2.
        mix_block: "amix", "automix" or a `keras_amix.layers.MixBlock`.
        mix_block_kwargs: switches for the Mix Block when given by preset name.
        alpha: float > 0, Beta(α, α) of both λ (2.0 in the paper).
        feature_stage: backbone stage whose output feeds the Mix Block
            ("stage3", the paper's l = 3).
        mix_loss: the Mix Block's classification loss: "ce", "pbce",
            "ce+pbce", "bce" (non-parametric, on pooled momentum embeddings),
            "ce+bce".
        momentum_schedule: a `MomentumSchedule` (base 0.999 → 1, cosine after
            10 % warm-up) or a float for a constant momentum.
        total_steps: number of training steps the schedule spans (None: the
            momentum stays at its base value).
        clean_loss_weight: weight of the one-hot CE on the clean batch.
        bce_temperature: temperature of the "bce" similarities.
        separate_mix_head: True (the official code; off by default until the
            TF step with it is bit-reproducible under load, see BUILD_NOTES
            2026-12-02): two classifier heads, one
            for the clean CE (`head`, the one evaluated and exported) and one
            for the mixup CE (`mix_head`), each with its EMA copy; φ trains
            through the EMA of the mix head. False: one head serves both
            losses and φ trains through its EMA copy.
        momentum_full_forward: True (the official code; off by default, as
            `separate_mix_head`): the momentum encoder
            runs its whole forward on the clean batch every step (its
            BatchNorm statistics after the Mix Block's stage see clean
            images too); False: it runs only up to `feature_stage`.
        phi_lam_adjust: False (the paper and the official code): φ mixes its
            images with the raw mask. True (this package's option, BUILD_NOTES
            2026-12-07): λ adjusting (DESIGN §4) is applied to φ's mask too,
            *with* its gradient, before the φ-mixed images are made, so φ's
            mixup loss always sees a mask of mean λ and only the mask's shape
            is left to learn; the mask loss and `mask_std` stay on the raw
            mask. It helps the Mix Block leave its flat start on short runs.
        seed: int seed of λ and the pairings.

    Call arguments:
        images: (B, H, W, C) normalised images; H and W multiples of the
            feature stage's stride.
        training: bool.
        momentum: bool, use the momentum encoder and head (default False).

    Example:

    ```python
    backbone = keras_amix.backbones.resnet(18, width=16)
    model = keras_amix.models.AMixClassifier(backbone, 100, mix_block="amix",
                                             total_steps=epochs * steps)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(train_ds, validation_data=test_ds, epochs=epochs)
    ```

    Reference: AMix paper §3.2-3.3, Fig. 3, Tables 1, 7, 8; Liu et al. 2021
    (AutoMix) for the momentum pipeline.
    """

    nested_config_keys = ("backbone", "mix_block", "momentum_schedule")

    def __init__(self, backbone, num_classes, mix_block="amix", mix_block_kwargs=None,
                 alpha=2.0, feature_stage="stage3", mix_loss="ce",
                 momentum_schedule=None, total_steps=None, clean_loss_weight=1.0,
                 bce_temperature=0.2, separate_mix_head=False, momentum_full_forward=False,
                 phi_lam_adjust=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2; received {num_classes!r}.")
        if not alpha > 0:
            raise ValueError(f"`alpha` must be > 0; received {alpha!r}.")
        if mix_loss not in MIX_LOSSES:
            raise ValueError(f"`mix_loss` must be one of {MIX_LOSSES}; received {mix_loss!r}.")
        if feature_stage not in ("stage1", "stage2", "stage3", "stage4"):
            raise ValueError(
                "`feature_stage` must be one of 'stage1'..'stage4'; "
                f"received {feature_stage!r}."
            )
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps < 1):
            raise ValueError(f"`total_steps` must be a positive int or None; received {total_steps!r}.")
        backbones_lib.stages(backbone)  # clear error for a backbone without named stages
        self.backbone = backbone
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.feature_stage = feature_stage
        self.mix_loss = mix_loss
        self.total_steps = total_steps
        self.clean_loss_weight = float(clean_loss_weight)
        self.bce_temperature = float(bce_temperature)
        self.separate_mix_head = bool(separate_mix_head)
        self.momentum_full_forward = bool(momentum_full_forward)
        self.phi_lam_adjust = bool(phi_lam_adjust)
        self.seed = seed
        if momentum_schedule is None:
            momentum_schedule = MomentumSchedule()
        elif isinstance(momentum_schedule, (int, float)):
            momentum_schedule = MomentumSchedule(base=float(momentum_schedule),
                                                 final=float(momentum_schedule))
        self.momentum_schedule = momentum_schedule

        self.mix_block_kwargs = dict(mix_block_kwargs or {})
        channels = backbones_lib.feature_channels(backbone, feature_stage)
        if isinstance(mix_block, str):
            mix_block = MixBlock(preset=mix_block, in_channels=channels,
                                 seed=seed, name="mix_block", **self.mix_block_kwargs)
        elif not isinstance(mix_block, MixBlock):
            raise ValueError(
                "`mix_block` must be 'amix', 'automix' or a MixBlock; "
                f"received {mix_block!r}."
            )
        self.mix_block = mix_block
        self.stride = backbones_lib.output_stride(backbone, feature_stage)

        feature_dim = backbones_lib.feature_channels(backbone, "stage4")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = _dense(num_classes, feature_dim, "head")
        self.mix_head = (_dense(num_classes, feature_dim, "mix_head")
                         if self.separate_mix_head else self.head)
        # The momentum encoder and heads: EMA copies. Their layers stay
        # trainable (BatchNorm uses batch statistics and updates its moving
        # averages in its own forward passes) but every variable is marked
        # non-trainable, so no optimizer ever touches them.
        self.momentum_backbone = keras.models.clone_model(backbone)
        self.momentum_head = _dense(num_classes, feature_dim, "momentum_head")
        self.momentum_mix_head = (_dense(num_classes, feature_dim, "momentum_mix_head")
                                  if self.separate_mix_head else self.momentum_head)
        online = [backbone, self.head]
        momentum = [self.momentum_backbone, self.momentum_head]
        if self.separate_mix_head:
            online.append(self.mix_head)
            momentum.append(self.momentum_mix_head)
        self._ema_pairs = []
        for k_layer, q_layer in zip(momentum, online):
            k_layer.set_weights(q_layer.get_weights())
            for variable in k_layer.weights:
                variable.trainable = False
            self._ema_pairs += [(k, q) for k, q in zip(k_layer.weights, q_layer.weights)
                                if q.trainable]
        if not self.mix_block.built:
            self.mix_block.build((None, None, None, channels))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True
        self.step_counter = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False, name="step_counter"
        )
        for name in ("loss", "loss_theta", "loss_phi", "mask_loss", "mask_std",
                     "mask_mean_error", "momentum"):
            self.add_tracker(keras.metrics.Mean(name=name))
        self.add_tracker(keras.metrics.CategoricalAccuracy(name="top1"))
        self.add_tracker(keras.metrics.CategoricalAccuracy(name="top1_momentum"))

    # ------------------------------------------------------------ forward
    def call(self, images, training=False, momentum=False):
        if isinstance(images, StepBatch):  # a batch of fit / evaluate
            return self.step_outputs(images, training)
        if momentum:
            return self.momentum_head(self.pool(self.momentum_backbone(images, training=False)))
        return self.head(self.pool(self.backbone(images, training=training)))

    def classifier(self, encoder="online"):
        """A functional `keras.Model` images -> logits of one encoder.

        `encoder="online"` (θ_q and its head) or `"momentum"` (θ_k and its
        head). It shares the weights with this model; pass it to
        `keras_amix.export.export_saved_model` to export either encoder.
        """
        if encoder not in ("online", "momentum"):
            raise ValueError(
                f"`encoder` must be 'online' or 'momentum'; received {encoder!r}."
            )
        backbone, head = (
            (self.backbone, self.head) if encoder == "online"
            else (self.momentum_backbone, self.momentum_head)
        )
        inputs = keras.Input(self.backbone.input_shape[1:])
        logits = head(self.pool(backbone(inputs, training=False)))
        return keras.Model(inputs, logits, name=f"{self.name}_{encoder}")

    def momentum_value(self, step=None):
        """The EMA momentum at `step` (default: the current step), a float32 scalar."""
        if self.total_steps is None:
            return ops.convert_to_tensor(self.momentum_schedule.base, "float32")
        step = self.step_counter if step is None else step
        return self.momentum_schedule.ops_call(step, self.total_steps)

    # -------------------------------------------------------------- train
    def _check_batch(self, images, labels):
        if len(images.shape) != 4:
            raise ValueError(
                f"`images` must be a rank-4 NHWC batch; received shape {tuple(images.shape)}."
            )
        height, width = images.shape[1], images.shape[2]
        for size, axis in ((height, "height"), (width, "width")):
            if size is not None and size % self.stride:
                raise ValueError(
                    f"Image {axis} must be a multiple of the {self.feature_stage} stride "
                    f"{self.stride}; received images of shape {tuple(images.shape)}."
                )
        if len(labels.shape) != 2 or labels.shape[-1] != self.num_classes:
            raise ValueError(
                f"`labels` must be one-hot or soft of shape (batch, {self.num_classes}); "
                f"received shape {tuple(labels.shape)}."
            )
        if images.shape[0] is not None and images.shape[0] < 2:
            raise ValueError(
                f"AMix mixes pairs within a batch: batch size must be >= 2; "
                f"received {images.shape[0]}."
            )

    def train_outputs(self, x, y):
        self._momentum_update()
        terms = self.compute_losses(x, y)
        theta, phi, mask = terms.pop("theta"), terms.pop("phi"), terms.pop("mask")
        outputs = dict(terms, loss=theta + phi + mask, loss_theta=theta, loss_phi=phi,
                       mask_loss=mask, momentum=self.momentum_value())
        self.step_counter.assign_add(ops.cast(1, "int32"))
        return outputs

    def _momentum_update(self):
        """θ_k ← m θ_k + (1 − m) θ_q for the previous step's optimizer update.

        Runs first thing in each step (Keras' step has no hook after the
        update), with the momentum of the previous step; m = 1 (no change)
        before the first step. A model read between steps has its last
        update pending; the next step (or a resumed run) applies it.
        """
        step = self.step_counter
        momentum = ops.where(step > 0, self.momentum_value(ops.maximum(step - 1, 0)), 1.0)
        ema_update(self._ema_pairs, momentum)

    def compute_losses(self, x, y):
        """The three loss terms of one step and what the step reports, as a dict.

        `theta`: the encoder's loss (reaches only θ_q and its head);
        `phi`: the Mix Block's classification loss through the frozen
        momentum encoder; `mask`: the Mix Block's mask loss; `mask_std`,
        `mask_mean_error` (φ's masks) and `top1` (the clean batch's labels
        and logits).
        """
        self._check_batch(x, y)
        y = ops.cast(y, "float32")
        batch = ops.shape(x)[0]
        image_size = (int(x.shape[1]), int(x.shape[2]))
        seed = self.seed_generator
        lam_phi = sample_lambda(seed, self.alpha, ())
        lam_theta = sample_lambda(seed, self.alpha, ())
        perm_phi = sample_permutation(seed, batch)
        perm_theta = sample_permutation(seed, batch)

        # The momentum encoder on the clean batch (no gradient): stage-l
        # features for the Mix Block and, with `momentum_full_forward`, the
        # rest of the forward (BatchNorm statistics, the "bce" embeddings).
        z = backbones_lib.run_stages(self.momentum_backbone, x, stop=self.feature_stage,
                                     training=True)
        z_end = z if self.feature_stage == "stage4" else None
        if z_end is None and (self.momentum_full_forward or "bce" in self.mix_loss.split("+")):
            z_end = backbones_lib.run_stages(self.momentum_backbone, z,
                                             start=_next_stage(self.feature_stage),
                                             training=True)
        z = ops.stop_gradient(z)
        mask_phi, loss_mask = self.mix_block.mask_and_loss(
            z, ops.take(z, perm_phi, axis=0), lam_phi, image_size)
        mask_theta = self.mix_block.encoder_mask(
            z, ops.take(z, perm_theta, axis=0), lam_theta, image_size)

        # θ: one-hot CE of the clean head on the clean batch + mixup CE of the
        # mix head on the images mixed with the stop-gradient mask.
        x_theta = mix_images(x, ops.take(x, perm_theta, axis=0), mask_theta)
        logits_clean = self.head(self.pool(self.backbone(x, training=True)))
        logits_mix = self.mix_head(self.pool(self.backbone(x_theta, training=True)))
        loss_theta = (
            self.clean_loss_weight * ops.mean(
                losses_lib.soft_target_cross_entropy(y, logits_clean))
            + ops.mean(losses_lib.soft_target_cross_entropy(
                mix_labels(y, perm_theta, lam_theta), logits_mix))
        )

        # φ: the mixup loss of the frozen momentum encoder + the mask loss.
        mask_mix = adjust_lambda(mask_phi, lam_phi) if self.phi_lam_adjust else mask_phi
        x_phi = mix_images(x, ops.take(x, perm_phi, axis=0), mask_mix)
        loss_phi = self._mix_block_loss(x_phi, y, z_end, perm_phi, lam_phi)

        stats = mask_statistics(mask_phi)
        return {"theta": loss_theta, "phi": loss_phi, "mask": loss_mask,
                "mask_std": stats["mask_std"],
                "mask_mean_error": ops.abs(stats["mask_mean"] - lam_phi),
                "top1": (y, logits_clean)}

    def _mix_block_loss(self, x_phi, y, z_end, perm, lam):
        """φ's classification loss: the frozen momentum encoder and its mix
        head on the φ-mixed images; `z_end` holds the momentum encoder's
        last-stage features of the clean batch (for "bce")."""
        embedding = self.pool(self.momentum_backbone(x_phi, training=True))
        logits = self.momentum_mix_head(embedding)
        y_b = ops.take(y, perm, axis=0)
        terms = []
        if "ce" in self.mix_loss.split("+"):
            terms.append(ops.mean(losses_lib.mixup_cross_entropy(logits, y, y_b, lam)))
        if "pbce" in self.mix_loss:
            terms.append(ops.mean(
                losses_lib.parametric_binary_cross_entropy(logits, y, y_b, lam)))
        if "bce" in self.mix_loss.split("+"):
            source = ops.stop_gradient(self.pool(z_end))
            terms.append(ops.mean(losses_lib.binary_cross_entropy_embeddings(
                embedding, source, ops.take(source, perm, axis=0), lam,
                temperature=self.bce_temperature)))
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    # --------------------------------------------------------------- eval
    def test_outputs(self, x, y):
        y = ops.cast(y, "float32")
        logits = self(x, training=False)
        return {"loss": ops.mean(losses_lib.soft_target_cross_entropy(y, logits)),
                "top1": (y, logits), "top1_momentum": (y, self(x, momentum=True))}

    # ------------------------------------------------------------ pictures
    def mask_panels(self, images, lams=(0.3, 0.5, 0.7), perm=None):
        """The Mix Block's masks and mixed images of the pairs (i, perm[i]) at
        each λ, in inference mode, from the momentum encoder's stage features (paper
        Fig. 4); with `phi_lam_adjust` after λ adjusting, as φ (and θ under
        the "amix" preset) then mixes with them. Returns numpy (L, B, H, W, 1)
        masks and (L, B, H, W, C) images.
        """
        import numpy as np

        perm = np.roll(np.arange(len(images)), -1) if perm is None else perm
        z = backbones_lib.run_stages(self.momentum_backbone, ops.convert_to_tensor(images),
                                     stop=self.feature_stage, training=False)
        return self.mix_block.mask_panels(z, images, lams, perm, adjust=self.phi_lam_adjust)

    # ------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            num_classes=self.num_classes,
            mix_block=keras.saving.serialize_keras_object(self.mix_block),
            alpha=self.alpha,
            feature_stage=self.feature_stage,
            mix_loss=self.mix_loss,
            momentum_schedule=keras.saving.serialize_keras_object(self.momentum_schedule),
            total_steps=self.total_steps,
            clean_loss_weight=self.clean_loss_weight,
            bce_temperature=self.bce_temperature,
            separate_mix_head=self.separate_mix_head,
            momentum_full_forward=self.momentum_full_forward,
            phi_lam_adjust=self.phi_lam_adjust,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Models saved before the two heads and the full momentum forward
        # (keras-amix 0.1) had one head and the partial forward.
        config.setdefault("separate_mix_head", False)
        config.setdefault("momentum_full_forward", False)
        return super().from_config(config)


def _dense(units, input_dim, name):
    layer = keras.layers.Dense(units, name=name)
    layer.build((None, input_dim))
    return layer


def _next_stage(stage):
    names = backbones_lib.STAGE_NAMES
    return names[names.index(stage) + 1]
