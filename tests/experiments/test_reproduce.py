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


def _cifar_like(tmp_path):
    """A stand-in for the suites' data: 32 x 32 images of 10 classes (the
    binaries read a data set's size when it is not the preset's)."""
    import numpy as np

    path = str(tmp_path / "cifar_like.npz")
    np.savez(path, x_train=np.zeros((20, 32, 32, 3), np.uint8), y_train=np.arange(20) % 10,
             x_test=np.zeros((10, 32, 32, 3), np.uint8), y_test=np.arange(10))
    return path


def test_every_suite_row_is_a_valid_binary_method(tmp_path, resolve_supervised):
    from experiments import train_supervised

    cifar = _cifar_like(tmp_path)
    for name, suite in reproduce.SUITES.items():
        if suite.selfsup:
            continue  # test_self_supervised_suite_commands_resolve
        for run in reproduce.plan(suite, 1, str(tmp_path / name)):
            row = run.row
            methods = [f.split("=", 1)[1] for f in row.flags if f.startswith("--method=")]
            assert len(methods) == 1 and methods[0] in train_supervised.METHODS, row
            # The binary accepts the row's whole command line (its flags are resolved
            # and checked without training).
            data = cifar if suite.needs_data else None
            cfg = resolve_supervised(reproduce.command(suite, run, data=data)[3:])
            assert cfg.method == methods[0]
            if name == "cifar10-5k":  # the DESIGN §12 budget's input
                assert (cfg.image_size, cfg.augment, cfg.stem, cfg.width) == \
                    (32, "cifar", "cifar", 16)
            if row.learnable:  # the Mix Block switches, as the binary's main checks them
                train_supervised.mix_block_switches(cfg)
    amix = reproduce.SUITES["cifar10-5k"].rows[-1]
    cfg = resolve_supervised([*amix.flags, "--preset=cpu_cifar10"])
    assert cfg.phi_lam_adjust and "var_weight=10" in cfg.mix_block




def test_self_supervised_suite_commands_resolve(tmp_path, resolve_flags):
    """Each run of `ssl-cifar10`: pretraining by train_selfsup into RUN/pretrain,
    then linear_eval of its encoder.keras into RUN; both command lines resolve."""
    from experiments import linear_eval
    from experiments import train_selfsup

    suite = reproduce.SUITES["ssl-cifar10"]
    assert suite.selfsup and suite.base == "mocov2"
    data = _cifar_like(tmp_path)
    labels = {row.label for row in suite.rows}
    assert labels == {"mocov2", "mixup", "inter_intra", "puzzlemix_c", "amix_i", "amix_c"}
    assert {row.label for row in suite.rows if row.learnable} == {"amix_i", "amix_c"}
    for run in reproduce.plan(suite, 1, str(tmp_path)):
        assert run.train_dir == os.path.join(run.workdir, "pretrain")
        pretrain, linear = reproduce.stages(suite, run, data=data)
        assert pretrain[2] == "experiments.train_selfsup" and linear[2] == "experiments.linear_eval"
        cfg = resolve_flags(train_selfsup, pretrain[3:])
        assert cfg.method == run.row.label and cfg.epochs == 200 and cfg.dataset == data
        assert (cfg.image_size, cfg.stem) == (32, "cifar")
        assert f"--workdir={run.train_dir}" in pretrain
        cfg = resolve_flags(linear_eval, linear[3:])
        assert cfg.encoder == os.path.join(run.train_dir, "encoder.keras")
        assert f"--workdir={run.workdir}" in linear and cfg.dataset == data
        # A finished pretraining is not redone: only the linear evaluation is left.
        os.makedirs(run.train_dir)
        _finish(reproduce.Run(None, 0, run.train_dir), [], [1.0])
        assert reproduce.stages(suite, run, data=data) == [linear]


def test_smoke_suite_covers_every_supervised_method():
    from experiments import train_supervised

    labels = {row.label for row in reproduce.SUITES["smoke"].rows}
    assert labels == set(train_supervised.METHODS)


def test_aggregate_median_of_last_ten_mean_and_std_by_hand(tmp_path):
    suite = reproduce.Suite(rows=reproduce._methods("vanilla", "amix"))
    runs = reproduce.plan(suite, 2, str(tmp_path))
    # 12 epochs: the median of the last 10 of 0..11 (/100) is 6.5/100.
    _finish(runs[0], [i / 100 for i in range(12)], [9.0, 2.0, 5.0, 2.5])
    _finish(runs[1], [0.5] * 12, [9.0, 4.0, 7.0])
    _finish(runs[2], [0.8] * 10, [7.0, 6.0, 6.5], momentum=[0.7] * 10)
    # runs[3] (amix seed 1) is not finished.
    rows = reproduce.aggregate(suite, [reproduce.run_result(r) for r in runs])
    vanilla, amix = rows
    assert vanilla["n"] == 2 and amix["n"] == 1
    assert vanilla["top1"] == pytest.approx((0.065 + 0.5) / 2)
    # sample std of two values a, b is |a - b| / sqrt(2)
    assert vanilla["top1_std"] == pytest.approx(abs(0.065 - 0.5) / 2 ** 0.5)
    assert vanilla["top1_momentum"] is None
    # s/epoch: the fastest epoch per run (2.0 and 4.0), then the mean.
    assert vanilla["seconds_per_epoch"] == pytest.approx(3.0)
    assert amix["top1_std"] is None and amix["top1_momentum"] == pytest.approx(0.7)
    assert amix["cost_vs_base"] == pytest.approx(6.0 / 3.0)
    text = reproduce.markdown("toy", suite, rows, 2)
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


def test_smoke_commands_are_the_smallest_runs_the_binary_accepts(tmp_path, resolve_supervised):
    suite = reproduce.SUITES["smoke"]
    for run in reproduce.plan(suite, 1, str(tmp_path)):
        cmd = reproduce.command(suite, run)
        assert cmd[1:3] == ["-m", "experiments.train_supervised"]
        cfg = resolve_supervised(cmd[3:])  # the binary refuses --mask_summary_every on static rows
        assert (cfg.epochs, cfg.export, cfg.width, cfg.per_class_limit, cfg.run_eagerly) == \
            (1, False, 8, 8, True)
        assert cfg.method == run.row.label and cfg.seed == 0
        assert (cfg.mask_summary_every == 0) == run.row.learnable, run.row
    assert {row.label for row in suite.rows if row.learnable} == {"automix", "amix"}
    # The measuring suites keep the binary's defaults (mask pictures included).
    assert all(not s.learned_flags and s.jobs == 1 for n, s in reproduce.SUITES.items()
               if n != "smoke")


def test_clock():
    assert [reproduce._clock(s) for s in (0, 59.6, 61, 3725)] == ["0:00", "1:00", "1:01",
                                                                  "1:02:05"]


def _start(run, epochs, done):
    os.makedirs(run.workdir, exist_ok=True)
    with open(os.path.join(run.workdir, "config.json"), "w") as f:
        json.dump(dict(epochs=epochs), f)
    with open(os.path.join(run.workdir, "history.csv"), "w") as f:
        f.write("epoch,val_top1\n" + "".join(f"{e},0.1\n" for e in range(done)))


def test_progress_line_numbers_runs_epochs_and_time_left(tmp_path):
    suite = reproduce.Suite(rows=reproduce._methods("vanilla", "mixup", "cutmix", "amix"))
    runs = reproduce.plan(suite, 1, str(tmp_path))
    _finish(runs[0], [0.5], [1.0])
    _start(runs[1], epochs=4, done=2)  # started here at epoch 0: half done
    # Nothing measured yet (run 3 has no config): no estimate.
    state, line = reproduce.progress(runs, [(runs[2], None, 0)], runs[3:], [], 5.0)
    assert line == "[1/4 done, 0:05 elapsed] run 3/4 cutmix seed 0: epoch 0/?"
    assert state == "[1/4 done] run 3/4 cutmix seed 0: epoch 0/?"
    # Done here in 90 s: vanilla (1 unit) + half of mixup (0.5) = 1.5 units, 60 s each.
    # Left: half of mixup (0.5) + amix (2.7, a learned run) = 3.2 units = 192 s.
    state, line = reproduce.progress(runs, [(runs[1], None, 0)], runs[3:],
                                     [(runs[0], None, 0)], 90.0)
    assert line == "[1/4 done, 1:30 elapsed, about 3:12 left] run 2/4 mixup seed 0: epoch 2/4"
    assert "elapsed" not in state
    # A resumed run that had 2 epochs at its start has progressed nothing yet here.
    _, line = reproduce.progress(runs, [(runs[1], None, 2)], runs[2:], [], 30.0)
    assert "left" not in line
    # An ended run counts only the epochs it trained here: vanilla resumed at 0 of 1
    # epochs (1 unit) in 30 s; mixup at 2 of 4 (half left, 0.5 units): 15 s.
    _, line = reproduce.progress(runs, [(runs[1], None, 2)], [], [(runs[0], None, 0)], 30.0)
    assert "about 0:15 left" in line
    # The rate of the window: the caller's oldest sample says 1.0 unit was done
    # at 1740 s; at 1800 s 1.5 units are done: 0.5 unit per 60 s, 3.2 units left
    # (half of mixup + amix) = 384 s, whatever the first 1740 s were.
    window = [(1740.0, 1.0)]
    _, line = reproduce.progress(runs, [(runs[1], None, 0)], runs[3:], [(runs[0], None, 0)],
                                 1800.0, window)
    assert "about 6:24 left" in line and window == [(1740.0, 1.0), (1800.0, 1.5)]
    # Samples older than the last half hour go, but for the last one before it:
    # at 5000 s the window starts at 3200 s, so (3100, 1.2) is the baseline:
    # 0.3 unit in 1900 s, 3.2 units left = 20267 s.
    window = [(0.0, 0.0), (3000.0, 1.0), (3100.0, 1.2)]
    _, line = reproduce.progress(runs, [(runs[1], None, 0)], runs[3:], [(runs[0], None, 0)],
                                 5000.0, window)
    assert "about 5:37:47 left" in line and window == [(3100.0, 1.2), (5000.0, 1.5)]
    # The rate's clock leaves out the spells the suite was stopped: 1.0 unit at
    # 600 s of running; at 9000 s elapsed, of which 7200 s stopped (1800 s of
    # running), 1.5 units: 0.5 unit per 1200 s, 3.2 units left = 7680 s.
    # (Without `clock`, 0.5 unit per 8400 s: 14:56:00.)
    window = [(600.0, 1.0)]
    _, line = reproduce.progress(runs, [(runs[1], None, 0)], runs[3:], [(runs[0], None, 0)],
                                 9000.0, window, clock=1800.0)
    assert "[1/4 done, 2:30:00 elapsed, about 2:08:00 left]" in line
    assert window == [(600.0, 1.0), (1800.0, 1.5)]
    _, line = reproduce.progress(runs, [(runs[1], None, 0)], runs[3:], [(runs[0], None, 0)],
                                 9000.0, [(600.0, 1.0)])
    assert "about 14:56:00 left" in line


def test_stopped_seconds_leaves_out_the_gaps_of_a_stopped_suite():
    # Polls 1 s apart, or slowed by a busy machine up to 61 s: the suite ran.
    assert reproduce.stopped_seconds(100.0, 101.0, 1.0) == 0.0
    assert reproduce.stopped_seconds(100.0, 161.0, 1.0) == 0.0
    # 2 h between two polls (SIGSTOP): all of it but one poll interval.
    assert reproduce.stopped_seconds(100.0, 7300.0, 1.0) == 7199.0
    assert reproduce.stopped_seconds(100.0, 164.0, 5.0) == 0.0  # within 5 + 60 s
    assert reproduce.stopped_seconds(100.0, 170.0, 1.0) == 69.0


class _FakeTrainer:
    """Stands for `subprocess.Popen` of the binary: ends on its second poll,
    finishing its run (writing metrics.json) unless the row is `fail_row`."""

    fail_row = "cutmix"
    live, peak = set(), 0  # processes alive now, the most at once

    def __init__(self, cmd, stdout=None, stderr=None):
        args = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
        self.workdir, self.method = args["workdir"], args["method"]
        self.polls, self.returncode = 0, None
        _FakeTrainer.live.add(self)
        _FakeTrainer.peak = max(_FakeTrainer.peak, len(_FakeTrainer.live))

    def poll(self):
        self.polls += 1
        if self.polls < 2:
            return None
        _FakeTrainer.live.discard(self)
        if self.method == self.fail_row:
            self.returncode = 1
        else:
            run = reproduce.Run(None, 0, self.workdir)
            _finish(run, [0.5] * 10, [2.0])
            self.returncode = 0
        return self.returncode


def test_self_supervised_runs_pretrain_then_evaluate_in_one_slot(tmp_path, monkeypatch):
    import io

    suite = reproduce.Suite(rows=(reproduce.Row("mocov2", ("--method=mocov2",)),
                                  reproduce.Row("amix_i", ("--method=amix_i",), cost=3.2)),
                            linear_flags=(), base="mocov2")
    monkeypatch.setitem(reproduce.SUITES, "toy_ssl", suite)
    launched = []

    class FakeBinary:
        """Ends on its second poll with its outputs: pretraining s/epoch (5 s for
        MoCo v2, 15 s for AMix-I) or the linear evaluation's history."""

        def __init__(self, cmd, stdout=None, stderr=None):
            self.binary = cmd[2]
            self.workdir = next(a.split("=", 1)[1] for a in cmd if a.startswith("--workdir="))
            self.polls, self.returncode = 0, None
            launched.append((self.binary.split(".")[1], os.path.relpath(self.workdir, tmp_path)))

        def poll(self):
            self.polls += 1
            if self.polls < 2:
                return None
            run = reproduce.Run(None, 0, self.workdir)
            if self.binary == "experiments.train_selfsup":
                _finish(run, [], [20.0, 8.0] if "amix_i" in self.workdir else [9.0, 3.0])
            else:
                _finish(run, [0.4] * 10, [0.1])
            self.returncode = 0
            return 0

    monkeypatch.setattr(reproduce.subprocess, "Popen", FakeBinary)
    rows, failed = reproduce.run_suite("toy_ssl", workdir=str(tmp_path), plots=False,
                                       poll_seconds=0, out=io.StringIO())
    assert not failed
    # AMix-I (learned) first; each run's linear evaluation right after its pretraining.
    assert launched == [("train_selfsup", "amix_i/seed0/pretrain"), ("linear_eval", "amix_i/seed0"),
                        ("train_selfsup", "mocov2/seed0/pretrain"), ("linear_eval", "mocov2/seed0")]
    mocov2, amix_i = rows
    assert mocov2["top1"] == amix_i["top1"] == pytest.approx(0.4)
    assert (mocov2["seconds_per_epoch"], amix_i["seconds_per_epoch"]) == (3.0, 8.0)
    assert amix_i["cost_vs_base"] == pytest.approx(8.0 / 3.0)
    text = open(tmp_path / "results.md").read()
    assert "| row | seeds done | linear top-1 | pretraining s / epoch | cost vs mocov2 |" in text
    assert "| amix_i | 1 | 40.00 | 8.0 | 2.67× |" in text
    # A run whose linear evaluation is missing redoes only that.
    os.remove(tmp_path / "amix_i" / "seed0" / "metrics.json")
    launched.clear()
    reproduce.run_suite("toy_ssl", workdir=str(tmp_path), resume=True, plots=False,
                        poll_seconds=0, out=io.StringIO())
    assert launched == [("linear_eval", "amix_i/seed0")]


def test_runs_start_seed_by_seed_learned_rows_first_followups_last():
    suite = reproduce.Suite(rows=reproduce._methods("vanilla", "mixup", "amix") + (
        reproduce.Row("amix[x]", ("--method=amix", "--x"), followup=True),))
    runs = reproduce.plan(suite, seeds=2, workdir="w")
    assert [(r.row.label, r.seed) for r in runs][:2] == [("vanilla", 0), ("vanilla", 1)]
    assert [(r.row.label, r.seed) for r in reproduce.launch_order(runs)] == [
        ("amix", 0), ("vanilla", 0), ("mixup", 0), ("amix", 1), ("vanilla", 1), ("mixup", 1),
        ("amix[x]", 0), ("amix[x]", 1)]
    # The suite of issue 12: its nine methods of every seed before its three variants.
    cifar = reproduce.SUITES["cifar10-5k"]
    order = reproduce.launch_order(reproduce.plan(cifar, seeds=3, workdir="w"))
    assert {r.row.label for r in order[:27]} == {
        "vanilla", "mixup", "cutmix", "fmix", "saliencymix", "resizemix", "puzzlemix",
        "automix", "amix"}
    assert all(r.row.followup for r in order[27:])


def test_runner_keeps_jobs_busy_reports_failures_and_resumes(tmp_path, monkeypatch):
    import io

    suite = reproduce.Suite(rows=reproduce._methods("vanilla", "cutmix", "amix"), jobs=2)
    monkeypatch.setitem(reproduce.SUITES, "toy", suite)
    monkeypatch.setattr(_FakeTrainer, "live", set())
    monkeypatch.setattr(_FakeTrainer, "peak", 0)
    monkeypatch.setattr(reproduce.subprocess, "Popen", _FakeTrainer)
    out = io.StringIO()
    rows, failed = reproduce.run_suite("toy", workdir=str(tmp_path), plots=False,
                                       poll_seconds=0, out=out)
    assert _FakeTrainer.peak == 2  # the suite's default jobs
    assert [(r.row.label, r.seed) for r in failed] == [("cutmix", 0)]
    assert [r["row"] for r in rows] == ["vanilla", "cutmix", "amix"]  # the table's order
    assert [r["n"] for r in rows] == [1, 0, 1]
    text = out.getvalue()
    # The learnable (longest) runs start first.
    assert text.startswith("[0/3 done, 0:00 elapsed] run 1/3 amix seed 0: epoch 0/?; "
                           "run 2/3 vanilla seed 0: epoch 0/?\n")
    assert "FAILED (exit 1): cutmix seed 0" in text
    assert text.splitlines()[-1].startswith("[2/3 done] 3 run(s) ended here (1 failed) in ")
    # --report starts nothing and tables the finished runs (a suite continued over days).
    os.remove(tmp_path / "results.md")
    monkeypatch.setattr(reproduce.subprocess, "Popen", None)  # any launch would fail
    rows, failed = reproduce.run_suite("toy", workdir=str(tmp_path), report=True, plots=False,
                                       poll_seconds=0, out=io.StringIO())
    assert [r["n"] for r in rows] == [1, 0, 1] and not failed
    assert "| cutmix | 0 |" in open(tmp_path / "results.md").read()
    with pytest.raises(ValueError, match="`report`.*`suite_workdir`.*nowhere', not a folder"):
        reproduce.run_suite("toy", workdir=str(tmp_path / "nowhere"), report=True)
    monkeypatch.setattr(reproduce.subprocess, "Popen", _FakeTrainer)
    # --resume reruns the failed run only.
    monkeypatch.setattr(_FakeTrainer, "fail_row", None)
    rows, failed = reproduce.run_suite("toy", workdir=str(tmp_path), resume=True, jobs=1,
                                       plots=False, poll_seconds=0, out=io.StringIO())
    assert not failed and [r["n"] for r in rows] == [1, 1, 1]
    with pytest.raises(ValueError, match="jobs"):
        reproduce.run_suite("toy", workdir=str(tmp_path), resume=True, jobs=0)


def test_runner_leaves_a_stopped_spell_out_of_the_estimate(tmp_path, monkeypatch):
    """A 2 h gap between two polls (the suite stopped) stays in `elapsed` and
    out of the clock the time-left rate is measured on."""
    import io

    suite = reproduce.Suite(rows=reproduce._methods("vanilla"), jobs=1)
    monkeypatch.setitem(reproduce.SUITES, "toy", suite)
    monkeypatch.setattr(_FakeTrainer, "fail_row", None)
    monkeypatch.setattr(reproduce.subprocess, "Popen", _FakeTrainer)
    ticks = iter([0.0, 1.0, 7202.0])  # t0, the first poll, the poll after the stop
    monkeypatch.setattr(reproduce.time, "time", lambda: next(ticks, 7203.0))
    calls = []
    progress = reproduce.progress

    def record(*args, **kwargs):
        calls.append((args[4], kwargs["clock"]))
        return progress(*args, **kwargs)

    monkeypatch.setattr(reproduce, "progress", record)
    reproduce.run_suite("toy", workdir=str(tmp_path), plots=False, poll_seconds=1.0,
                        out=io.StringIO())
    # (elapsed, clock): 7201 s between the two polls, 7200 of them stopped.
    assert calls[:2] == [(1.0, 1.0), (7202.0, 2.0)]


def _png(path, value):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, [[value, 1 - value]], cmap="gray")


def test_mask_gallery_redraws_only_panels_older_than_their_model(tmp_path, monkeypatch):
    from experiments import visualize_amix

    suite = reproduce.Suite(rows=reproduce._methods("vanilla", "automix", "amix"))
    runs = reproduce.plan(suite, 1, str(tmp_path))
    for run in runs:
        _finish(run, [0.5], [1.0])
        with open(os.path.join(run.workdir, "model.keras"), "wb") as f:
            f.write(b"not read")
    drawn = []

    def fake_visualize(checkpoint, seed, out):
        drawn.append(os.path.basename(os.path.dirname(os.path.dirname(checkpoint))))
        _png(out, 0.25)
        return out, {}

    monkeypatch.setattr(visualize_amix, "visualize", fake_visualize)
    automix = runs[1]
    _png(os.path.join(automix.workdir, "masks.png"), 0.5)  # drawn by the binary: kept
    path = reproduce.plot_mask_gallery(runs, str(tmp_path / "masks.png"))
    assert drawn == ["amix"]  # vanilla is not learnable; automix's panel is current
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    model = os.path.join(automix.workdir, "model.keras")
    os.utime(model, (os.path.getmtime(model) + 10,) * 2)  # retrained after its panel
    reproduce.plot_mask_gallery(runs, str(tmp_path / "masks.png"))
    assert drawn == ["amix", "automix"]
