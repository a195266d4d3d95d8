"""The spikes' model: an online `Dense` trained on an MSE, a target `Dense` that is
its EMA, assigned at the start of each step inside `compute_loss`, and a metric
updated there. Import after setting KERAS_BACKEND."""

import keras
from keras import ops


class EMAModel(keras.Model):
    def __init__(self, loss_divisor=lambda: 1, **kw):
        super().__init__(**kw)
        self.loss_divisor = loss_divisor  # TF MirroredStrategy: the replica count
        self.online = keras.layers.Dense(4, name="online")
        self.target = keras.layers.Dense(4, name="target")
        self.online.build((None, 3))
        self.target.build((None, 3))
        for v in self.target.weights:
            v.trainable = False
        self.extra = keras.metrics.Mean(name="extra")

    def call(self, x, training=False):
        return self.online(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # EMA of the previous step's update, first thing in this step.
        for t, s in zip(self.target.weights, self.online.weights):
            t.assign(0.9 * t + 0.1 * s)
        extra = ops.mean(ops.square(self.target(x)))
        self.extra.update_state(extra)
        return (ops.mean(ops.square(y_pred - y)) + 0.0 * extra) / self.loss_divisor()

    @property
    def metrics(self):
        return [self.extra] + super().metrics
