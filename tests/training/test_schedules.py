"""Tests of keras_amix.training.schedules.MomentumSchedule."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_amix.training.schedules import MomentumSchedule


def test_values_by_hand():
    s = MomentumSchedule(base=0.999, final=1.0, warmup_fraction=0.1)
    assert s(0, 100) == 0.999
    assert s(5, 100) == 0.999
    assert s(10, 100) == pytest.approx(0.999, abs=1e-12)  # t = 0
    # step 50: t = 40 / 90; cos(0.4444 pi) = cos(80 deg) = 0.173648
    assert s(50, 100) == pytest.approx(1.0 - 0.001 * (0.17364817766 + 1) / 2, abs=1e-12)
    assert s(55, 100) == pytest.approx(0.9995, abs=1e-12)  # t = 1/2: midpoint
    assert s(100, 100) == pytest.approx(1.0, abs=1e-12)
    assert s(150, 100) == pytest.approx(1.0, abs=1e-12)  # clipped


def test_official_end_value_and_no_warmup():
    s = MomentumSchedule(base=0.99, final=0.999999, warmup_fraction=0.0)
    assert s(0, 10) == pytest.approx(0.99)
    assert s(10, 10) == pytest.approx(0.999999)
    assert s(5, 10) == pytest.approx((0.99 + 0.999999) / 2)


def test_monotone_between_base_and_final():
    s = MomentumSchedule()
    values = [s(i, 200) for i in range(201)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[0] == 0.999 and values[-1] == pytest.approx(1.0)


def test_ops_version_matches_python():
    s = MomentumSchedule(base=0.99, final=1.0, warmup_fraction=0.1)
    steps = np.arange(0, 101, 7)
    got = np.asarray(ops.convert_to_numpy(s.ops_call(steps, 100)), "float64")
    np.testing.assert_allclose(got, [s(int(i), 100) for i in steps], atol=1e-6)
    step = keras.Variable(50, dtype="int32", trainable=False)
    got = float(ops.convert_to_numpy(s.ops_call(step, 100)))
    assert got == pytest.approx(s(50, 100), abs=1e-6)


def test_config_round_trip_and_validation():
    s = MomentumSchedule(base=0.99, final=0.9999, warmup_fraction=0.2)
    clone = MomentumSchedule.from_config(s.get_config())
    assert clone.get_config() == s.get_config()
    assert clone(40, 100) == s(40, 100)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert restored.get_config() == s.get_config()
    with pytest.raises(ValueError, match="base"):
        MomentumSchedule(base=1.5)
    with pytest.raises(ValueError, match="warmup_fraction"):
        MomentumSchedule(warmup_fraction=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        s(1, 0)
    assert math.isfinite(s(0, 1))


def test_horizon_rule_by_hand():
    # 1000 steps, horizon 2 %: start at 1 - 1/(0.02 * 1000) = 0.95 < 0.999.
    schedule = MomentumSchedule(base=0.999, final=1.0, horizon_fraction=0.02)
    assert schedule.start(1000) == pytest.approx(0.95)
    assert schedule(0, 1000) == pytest.approx(0.95)
    assert schedule(99, 1000) == pytest.approx(0.95)  # the 10 % warm-up holds it
    # Half way through the cosine (step 550): 1 - 0.05 * (cos(pi/2) + 1) / 2 = 0.975.
    assert schedule(550, 1000) == pytest.approx(0.975)
    assert schedule(1000, 1000) == pytest.approx(1.0)
    # A paper-length run (CIFAR-100: 800 epochs x 500 steps) keeps base 0.999.
    assert schedule.start(400_000) == 0.999
    assert MomentumSchedule(base=0.999).start(1000) == 0.999  # off by default


def test_horizon_rule_ops_matches_python():
    schedule = MomentumSchedule(horizon_fraction=0.05)
    for step in (0, 30, 150, 299, 300):
        assert float(keras.ops.convert_to_numpy(schedule.ops_call(step, 300))) == \
            pytest.approx(schedule(step, 300), abs=1e-6)


def test_horizon_rule_validation_and_config():
    for bad in (0.0, 1.5, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="horizon_fraction"):
            MomentumSchedule(horizon_fraction=bad)
    schedule = MomentumSchedule(horizon_fraction=0.02)
    assert MomentumSchedule.from_config(schedule.get_config()).start(1000) == schedule.start(1000)
