"""Trainable models: static-mixup classifier, AutoMix / AMix classifier, MoCo v2,
its mixing strategies (`keras_amix.models.moco_mixing`), AMix-I / AMix-C, and
the ODC memory they cluster with."""

from keras_amix.models.amix import AMixClassifier
from keras_amix.models.amix_ssl import AMixSSL
from keras_amix.models.classifier import MixupClassifier
from keras_amix.models import moco_mixing
from keras_amix.models.moco import MoCoV2
from keras_amix.models.odc import ODCCallback
from keras_amix.models.odc import ODCMemory
