"""Backbones with named stages (see `keras_amix.backbones.resnet`)."""

from keras_amix.backbones.resnet import STAGE_NAMES
from keras_amix.backbones.resnet import feature_channels
from keras_amix.backbones.resnet import output_stride
from keras_amix.backbones.resnet import resnet
from keras_amix.backbones.resnet import run_stages
from keras_amix.backbones.resnet import stages

__all__ = [
    "STAGE_NAMES",
    "feature_channels",
    "output_stride",
    "resnet",
    "run_stages",
    "stages",
]
