"""Class-level mixers (DESIGN section 3): `get(name, **kwargs)`, `available()`.

Each mixer splits sampling (`sample_params`) from applying (`mix_images`,
`mix_labels`); calling it does both. Each mixer class sets `default_alpha`
(`get_class(name).default_alpha`); the built-in ones read it from `names.py`,
the plain-Python table the binaries read before Keras loads. A new mixer is
one file plus a `@register("name")` decorator, imported below (a built-in
one also adds its line to `names.py`).
"""

from keras_amix.mixers.base import Mixer
from keras_amix.mixers.base import available
from keras_amix.mixers.base import box_mask
from keras_amix.mixers.base import get
from keras_amix.mixers.base import get_class
from keras_amix.mixers.base import one_hot_labels
from keras_amix.mixers.base import register
from keras_amix.mixers.base import sample_boxes
from keras_amix.mixers.primitives import mix_images
from keras_amix.mixers.primitives import mix_labels
from keras_amix.mixers.primitives import sample_lambda
from keras_amix.mixers.primitives import sample_permutation
from keras_amix.mixers.comixup import CoMixup
from keras_amix.mixers.cutmix import CutMix
from keras_amix.mixers.fmix import FMix
from keras_amix.mixers.manifoldmix import ManifoldMix
from keras_amix.mixers.mixup import MixUp
from keras_amix.mixers.puzzlemix import PuzzleMix
from keras_amix.mixers.resizemix import ResizeMix
from keras_amix.mixers.saliencymix import SaliencyMix
