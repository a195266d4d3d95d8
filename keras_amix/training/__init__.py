"""Training utilities: the step skeleton, schedules, optimizers, callbacks.

Importing the package registers every serialisable class (`CoupledSGD`,
`MomentumSchedule`, ...), so `keras.saving.load_model` finds them after a
plain `import keras_amix`.
"""

from keras_amix.training import callbacks, optimizers, schedules, step  # noqa: F401
from keras_amix.training.optimizers import CoupledSGD  # noqa: F401
from keras_amix.training.schedules import MomentumSchedule  # noqa: F401
