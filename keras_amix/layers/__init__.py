"""Layers: the Mix Block (AutoMix) / Mix Block+ (AMix); split BatchNorm (MoCo)."""

from keras_amix.layers.mix_block import MixBlock
from keras_amix.layers.mix_block import adjust_lambda
from keras_amix.layers.mix_block import mask_statistics
from keras_amix.layers.mix_block import rescale_lambda
from keras_amix.layers.split_batch_norm import SplitBatchNormalization

__all__ = ["MixBlock", "SplitBatchNormalization", "adjust_lambda", "mask_statistics",
           "rescale_lambda"]
