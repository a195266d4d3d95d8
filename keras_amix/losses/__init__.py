"""Losses: soft-target / mixup CE, pBCE, BCE, infoNCE, mixup infoNCE, mask losses."""

from keras_amix.losses.classification import SoftTargetCrossEntropy
from keras_amix.losses.classification import mixup_cross_entropy
from keras_amix.losses.classification import parametric_binary_cross_entropy
from keras_amix.losses.classification import soft_target_cross_entropy
from keras_amix.losses.contrastive import binary_cross_entropy_embeddings
from keras_amix.losses.contrastive import info_nce
from keras_amix.losses.contrastive import mixup_info_nce
from keras_amix.losses.mask import mask_loss
from keras_amix.losses.mask import mask_mean_loss
from keras_amix.losses.mask import mask_variance
from keras_amix.losses.registry import MixupLoss
from keras_amix.losses.registry import available
from keras_amix.losses.registry import combined
from keras_amix.losses.registry import get

__all__ = [
    "MixupLoss",
    "SoftTargetCrossEntropy",
    "available",
    "binary_cross_entropy_embeddings",
    "combined",
    "get",
    "info_nce",
    "mask_loss",
    "mask_mean_loss",
    "mask_variance",
    "mixup_cross_entropy",
    "mixup_info_nce",
    "parametric_binary_cross_entropy",
    "soft_target_cross_entropy",
]
