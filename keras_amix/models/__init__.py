"""Trainable models: static-mixup classifier, AutoMix / AMix classifier, MoCo v2."""

from keras_amix.models.amix import AMixClassifier
from keras_amix.models.classifier import MixupClassifier
from keras_amix.models.moco import MoCoV2
