"""The benchmark helpers: interleaved timing, ratio rows, the SSL summary."""

import json
import os

import pytest

from benchmarks import common
from benchmarks import summarize_selfsup


def test_time_interleaved_runs_every_step_the_same_number_of_times():
    calls = {"a": 0, "b": 0}

    def step(name):
        calls[name] += 1

    times = common.time_interleaved({n: (lambda n=n: step(n)) for n in calls}, rounds=3,
                                    repeats=4, warmup=1)
    assert calls == {"a": 1 + 3 * 4, "b": 1 + 3 * 4}
    assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3}


def test_ratio_rows_by_hand():
    rows = common.ratio_rows({"base": [0.1, 0.3, 0.2], "mix": [0.4, 0.5, 0.6]}, batch_size=10,
                             reference="base")
    assert rows[0] == pytest.approx(dict(method="base", step_ms=200.0, img_per_s=50.0,
                                         ratio_to_first=1.0))
    assert rows[1]["step_ms"] == pytest.approx(500.0)
    assert rows[1]["ratio_to_first"] == pytest.approx(2.5)


def test_summarize_selfsup_reads_both_phases_and_marks_missing(tmp_path):
    run = tmp_path / "mixup"
    os.makedirs(run / "linear")
    json.dump({"history": {"loss": [9.0, 8.0]}, "seconds_per_epoch": [3.0, 1.0, 2.0]},
              open(run / "metrics.json", "w"))
    json.dump({"top1": 0.5, "median_last10_top1": 0.45}, open(run / "linear" / "metrics.json", "w"))
    reference = tmp_path / "random_init" / "linear"
    os.makedirs(reference)
    json.dump({"top1": 0.25, "median_last10_top1": 0.2}, open(reference / "metrics.json", "w"))
    rows = summarize_selfsup.summarize(str(tmp_path), ["mixup", "mocov2", "random_init"])
    assert rows[0] == dict(method="mixup", status="ok", epochs=2, final_loss=8.0,
                           seconds_per_epoch=2.0, linear_top1=0.5, linear_median_last10=0.45)
    assert rows[1] == dict(method="mocov2", status="missing")
    assert rows[2] == dict(method="random_init", status="ok", epochs=0, final_loss=None,
                           seconds_per_epoch=None, linear_top1=0.25, linear_median_last10=0.2)
