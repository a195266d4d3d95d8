"""ManifoldMix: MixUp of hidden features at a randomly chosen layer."""

import keras
from keras import ops

from keras_amix.mixers.base import register
from keras_amix.mixers.mixup import MixUp
from keras_amix.mixers.names import DEFAULT_ALPHA


@register("manifoldmix")
class ManifoldMix(MixUp):
    """ManifoldMix: MixUp applied to the features of a random layer.

    This mixer needs the classifier's cooperation: per step the model calls
    `params = mixer.sample_params(images)` (λ, perm and a layer index drawn
    uniformly from `layers`), then after each candidate layer calls
    `h = mixer.maybe_mix(h, layer_name, params)`, which mixes `h` with
    `h[perm]` only when `layer_name` is the sampled layer (a tensor select, so
    it compiles), and mixes the labels with `mixer.mix_labels(labels,
    params)`. Called directly, `mixer(x, y)` is MixUp on a tensor of any rank
    ≥ 2 (the "input" layer).

    Args:
        alpha: float > 0, Beta(α, α) concentration, or None for
            `default_alpha` (2.0, the paper's CIFAR grid).
        layers: tuple of layer names to choose from; "input" means the
            images. Defaults to ("input", "stage1", "stage2", "stage3").
        num_classes, per_sample, no_repeat, fixed_lam, seed: as `MixUp`.

    Call arguments:
        images: (B, ...) tensor (rank ≥ 2) or a dict `{"images", "labels"}`.
        labels: (B, K) one-hot / soft labels, or int labels with `num_classes`.
        training: bool; False returns the inputs unchanged.

    Example:
    ```python
    mixer = keras_amix.mixers.get("manifoldmix")
    params = mixer.sample_params(images)         # + params["layer"] (int32)
    h = mixer.maybe_mix(images, "input", params)
    h = stage1(h); h = mixer.maybe_mix(h, "stage1", params)
    ...
    y_mix = mixer.mix_labels(labels, params)
    ```

    Reference:
        Verma et al., "Manifold Mixup: Better Representations by
        Interpolating Hidden States", ICML 2019.
    """

    default_alpha = DEFAULT_ALPHA["manifoldmix"]
    mixes_hidden = True
    image_rank = None

    def __init__(self, alpha=None, layers=("input", "stage1", "stage2", "stage3"), **kwargs):
        super().__init__(alpha=alpha, **kwargs)
        layers = tuple(layers)
        if not layers or not all(isinstance(n, str) for n in layers):
            raise ValueError(
                "`layers` must be a non-empty tuple of layer names; received "
                f"layers={layers!r}."
            )
        self.layers = layers

    def sample_layer(self, seed=None):
        """Index into `layers` (int32 scalar tensor), uniform."""
        seed = self.seed_generator if seed is None else seed
        u = keras.random.uniform((), seed=seed)
        n = len(self.layers)
        return ops.minimum(ops.cast(ops.floor(u * n), "int32"), n - 1)

    def sample_params(self, images, labels=None, **extra):
        params = super().sample_params(images, labels, **extra)
        params["layer"] = self.sample_layer()
        return params

    def maybe_mix(self, features, layer, params):
        """Mixes `features` with `features[perm]` iff `layer` was sampled.

        Args:
            features: (B, ...) hidden features of the current batch.
            layer: a name from `layers` (or its index).
            params: the dict from `sample_params` (uses "lam", "perm", "layer").
        """
        index = self.layers.index(layer) if isinstance(layer, str) else int(layer)
        features = ops.convert_to_tensor(features)
        mixed = self.mix_images(
            features, ops.take(features, params["perm"], axis=0), params
        )
        chosen = ops.equal(params["layer"], index)
        return ops.where(chosen, mixed, features)

    def get_config(self):
        config = super().get_config()
        config["layers"] = list(self.layers)
        return config
