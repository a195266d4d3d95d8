"""Layers: the Mix Block (AutoMix) / Mix Block+ (AMix)."""

from keras_amix.layers.mix_block import MixBlock
from keras_amix.layers.mix_block import adjust_lambda
from keras_amix.layers.mix_block import mask_statistics
from keras_amix.layers.mix_block import rescale_lambda

__all__ = ["MixBlock", "adjust_lambda", "mask_statistics", "rescale_lambda"]
