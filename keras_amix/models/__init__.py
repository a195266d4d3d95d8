"""Trainable models: static-mixup classifier, AutoMix / AMix classifier."""

from keras_amix.models.amix import AMixClassifier
from keras_amix.models.classifier import MixupClassifier
