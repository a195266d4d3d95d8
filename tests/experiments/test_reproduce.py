"""experiments/reproduce.py: planning, aggregation by hand, resume and refusals."""

import json
import os

import pytest

from experiments import reproduce


def _finish(run, top1, seconds, momentum=None):
    os.makedirs(run.workdir, exist_ok=True)
    history = {"val_top1": top1}
    if momentum is not None:
        history["val_top1_momentum"] = momentum
    with open(run.metrics_path, "w") as f:
        json.dump(dict(history=history, seconds_per_epoch=seconds), f)


def test_plan_is_every_row_and_seed(tmp_path):
    suite = reproduce.SUITES["cifar10-5k"]
    runs = reproduce.plan(suite, 3, str(tmp_path))
    assert len(runs) == 3 * len(suite.rows)
    assert len({r.workdir for r in runs}) == len(runs)
    assert [r.seed for r in runs[:3]] == [0, 1, 2]


def test_every_suite_row_is_a_valid_binary_method():
    from experiments import train_supervised

    for suite in reproduce.SUITES.values():
        for row in suite.rows:
            methods = [f.split("=", 1)[1] for f in row.flags if f.startswith("--method=")]
            assert len(methods) == 1 and methods[0] in train_supervised.METHODS, row


def test_smoke_suite_covers_every_supervised_method():
    from experiments import train_supervised

    labels = {row.label for row in reproduce.SUITES["smoke"].rows}
    assert labels == set(train_supervised.METHODS)


def test_aggregate_median_of_last_ten_mean_and_std_by_hand(tmp_path):
    suite = reproduce.Suite(rows=reproduce._methods("vanilla", "amix"))
    runs = reproduce.plan(suite, 2, str(tmp_path))
    # 12 epochs: the median of the last 10 of 0..11 (/100) is 6.5/100.
    _finish(runs[0], [i / 100 for i in range(12)], [9.0, 2.0, 2.0, 2.0])
    _finish(runs[1], [0.5] * 12, [9.0, 4.0, 4.0])
    _finish(runs[2], [0.8] * 10, [5.0, 6.0, 6.0], momentum=[0.7] * 10)
    # runs[3] (amix seed 1) is not finished.
    rows = reproduce.aggregate(suite, [reproduce.run_result(r) for r in runs])
    vanilla, amix = rows
    assert vanilla["n"] == 2 and amix["n"] == 1
    assert vanilla["top1"] == pytest.approx((0.065 + 0.5) / 2)
    # sample std of two values a, b is |a - b| / sqrt(2)
    assert vanilla["top1_std"] == pytest.approx(abs(0.065 - 0.5) / 2 ** 0.5)
    assert vanilla["top1_momentum"] is None
    # s/epoch: the median per run (2.0 and 4.0), then the mean.
    assert vanilla["seconds_per_epoch"] == pytest.approx(3.0)
    assert amix["top1_std"] is None and amix["top1_momentum"] == pytest.approx(0.7)
    assert amix["cost_vs_vanilla"] == pytest.approx(6.0 / 3.0)
    text = reproduce.markdown("toy", rows, 2)
    assert "| vanilla | 2 | 28.25 ± 30.76 |" in text
    assert "| amix | 1 | 80.00 | 70.00 | 6.0 | 2.00× |" in text


def test_refuses_existing_folder_without_resume_and_missing_data(tmp_path):
    suite_dir = tmp_path / "suite"
    run = reproduce.plan(reproduce.SUITES["smoke"], 1, str(suite_dir))[0]
    os.makedirs(run.workdir)
    with pytest.raises(ValueError, match="--resume"):
        reproduce.run_suite("smoke", seeds=1, workdir=str(suite_dir), plots=False)
    with pytest.raises(ValueError, match="--data"):
        reproduce.run_suite("cifar10-5k", seeds=1, workdir=str(tmp_path / "c"), plots=False)
    with pytest.raises(ValueError, match="suite"):
        reproduce.run_suite("nope")
    with pytest.raises(ValueError, match="seeds"):
        reproduce.run_suite("smoke", seeds=0)


def test_resume_skips_finished_runs_and_writes_results(tmp_path, monkeypatch):
    suite = reproduce.Suite(rows=reproduce._methods("vanilla", "mixup"))
    monkeypatch.setitem(reproduce.SUITES, "toy", suite)
    runs = reproduce.plan(suite, 1, str(tmp_path))
    for run in runs:
        _finish(run, [0.25] * 10, [1.0])
    launched = []
    monkeypatch.setattr(reproduce.subprocess, "Popen",
                        lambda *a, **k: launched.append(a) or pytest.fail("relaunched"))
    rows, failed = reproduce.run_suite("toy", seeds=1, resume=True, workdir=str(tmp_path),
                                       plots=False, poll_seconds=0)
    assert not launched and not failed
    assert [r["top1"] for r in rows] == [0.25, 0.25]
    with open(tmp_path / "results.json") as f:
        assert len(json.load(f)["runs"]) == 2
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_accuracy_plot_is_written(tmp_path):
    rows = [dict(row="a", top1=0.5, top1_std=0.01, seconds_per_epoch=2.0,
                 seconds_per_epoch_std=None)]
    path = reproduce.plot_accuracy_vs_time(rows, str(tmp_path / "p.png"), "t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
