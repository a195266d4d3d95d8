"""The supervised binary end to end (subprocesses) and its config handling."""

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from experiments import train_supervised as ts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, backend="tensorflow", check=True):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "experiments.train_supervised", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-5000:])
    return proc


@pytest.mark.backend_independent
def test_smoke_run_writes_everything_and_export_serves(tmp_path):
    workdir = str(tmp_path / "run")
    # Eager steps: the compiled binary runs every method in the smoke suite.
    proc = _run(["--smoke", f"--workdir={workdir}", "--method=mixup", "--run_eagerly"])
    for name in ("config.json", "metrics.json", "model.keras", "export", "tensorboard",
                 "history.csv"):
        assert os.path.exists(os.path.join(workdir, name)), name
    # TensorFlow's INFO lines of the export (a page of renamed inputs) stay out
    # of the run's output unless --verbosity asks for them.
    assert "signature_serialization" not in proc.stderr, proc.stderr[-2000:]
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["method"] == "mixup" and config["alpha"] == ts.DEFAULT_ALPHA["mixup"]
    assert config["width"] == 8  # --smoke
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert 0.0 <= metrics["final_top1"] <= 1.0
    assert len(metrics["history"]["val_top1"]) == config["epochs"]
    # The SavedModel serves uint8 images of another size and batch in a fresh process.
    code = (
        "import numpy as np, tensorflow as tf, sys;"
        "m = tf.saved_model.load(sys.argv[1]);"
        "x = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3)).astype('uint8');"
        "p = m.serve(tf.constant(x))['output'].numpy();"
        "assert p.shape == (3, 10), p.shape;"
        "assert np.allclose(p.sum(1), 1, atol=1e-5);"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code, os.path.join(workdir, "export")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


@pytest.mark.backend_independent
def test_smoke_amix_ablation_row(tmp_path):
    # TensorFlow (the TensorBoard mask pictures); the same row trains compiled on
    # JAX in tests/experiments/test_input_numpy.py.
    workdir = str(tmp_path / "amix")
    _run(["--smoke", f"--workdir={workdir}", "--method=amix", "--mix_block=attention=cross",
          "--epochs=1", "--export=false", "--phi_lr=0.05", "--run_eagerly"])
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert "val_top1_momentum" in metrics["history"]
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["mix_block"] == ["attention=cross"]
    masks = os.path.join(workdir, "tensorboard", "masks")
    assert os.path.isdir(masks) and os.listdir(masks)  # Fig.-4 style mask summaries


@pytest.mark.backend_independent
def test_bad_flags_fail_before_training(tmp_path):
    proc = _run(["--method=nope", f"--workdir={tmp_path}"], check=False)
    assert proc.returncode != 0
    assert "--method" in proc.stderr and "nope" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "config.json"))


@pytest.mark.parametrize("changes,match", [
    (dict(method="nope"), "--method"),
    (dict(backbone="resnet19"), "--backbone"),
    (dict(width=0), "--width"),
    (dict(method="mixup", batch_size=1), "--batch_size"),
    (dict(alpha=-1.0), "--alpha"),
    (dict(method="amix", mix_block=("attention=sideways",)), "attention"),
    (dict(method="amix", mix_block=("bogus=1",)), "--mix_block"),
    (dict(method="mixup", mix_block=("attention=cross",)), "--mix_block"),
])
def test_validate_rejects_bad_configs(changes, match):
    cfg = dataclasses.replace(ts.Config(), **changes)
    with pytest.raises(ValueError, match=match):
        ts.validate(cfg)
        ts.build_model(cfg, 10)


@pytest.mark.parametrize("item,expected", [
    ("lam_encoding=none", {"lam_encoding": "none"}),  # a choice, not None
    ("lam_rescale_k=none", {"lam_rescale_k": None}),
    ("lam_margin=0.08", {"lam_margin": 0.08}),
    ("value_bias=false", {"value_bias": False}),
])
def test_mix_block_flag_values_keep_their_kind(item, expected):
    cfg = dataclasses.replace(ts.Config(), method="automix", mix_block=(item,))
    assert ts.mix_block_switches(cfg) == expected


def test_unknown_dataset_is_a_clear_error(tmp_path):
    cfg = dataclasses.replace(ts.Config(), dataset="no_such_dataset", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no_such_dataset"):
        ts.train(cfg, str(tmp_path / "run"))


def test_eval_epochs_by_hand():
    from experiments import common

    # Every 10th, the first this process runs, and the last 10 (the paper's median).
    assert common.eval_epochs(100, 10) == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, *range(91, 101)]
    assert common.eval_epochs(100, 10, initial_epoch=37) == [38, 40, 50, 60, 70, 80, 90,
                                                             *range(91, 101)]
    assert common.eval_epochs(100, 10, initial_epoch=95) == list(range(96, 101))
    assert common.eval_epochs(5, 3) == [1, 2, 3, 4, 5]  # shorter than 10: every epoch
    assert common.eval_epochs(12, 1) == list(range(1, 13))
    with pytest.raises(ValueError, match="eval_every.*received 0"):
        common.eval_epochs(10, 0)


def test_eval_every_skips_evaluations_without_changing_training(tmp_path, monkeypatch):
    """`--eval_every`: epochs not evaluated are NA in history.csv, and the
    training is the same (an evaluation touches no state: the momentum
    encoder, BatchNorm statistics and the seed generator only move in training
    steps). 3 epochs of one step, the always-evaluated tail shortened from 10
    to 1."""
    import functools

    import keras

    from experiments import common

    monkeypatch.setattr(common, "eval_epochs", functools.partial(common.eval_epochs, last=1))
    # Eager steps on TF (21 s against 42 s compiled), compiled on JAX (39 s
    # against 70 s eager: each of the AMix step's many small ops compiles on
    # its first eager call there).
    base = dataclasses.replace(
        ts.Config(), method="amix", epochs=3, batch_size=8, max_train_examples=8,
        max_test_examples=8, image_size=8, width=8, export=False,
        run_eagerly=keras.backend.backend() != "jax", mask_summary_every=0)
    runs = {}
    for every in (1, 3):  # 3: epochs 1 (the first) and 3 evaluated, not 2 (index 1)
        workdir = str(tmp_path / f"every{every}")
        runs[every] = ts.train(dataclasses.replace(base, eval_every=every), workdir), workdir
    (dense, dense_dir), (sparse, sparse_dir) = runs[1], runs[3]
    rows = list(csv.DictReader(open(os.path.join(sparse_dir, "history.csv"))))
    assert [r["val_top1"] == "NA" for r in rows] == [False, True, False]
    assert [r["val_top1_momentum"] == "NA" for r in rows] == [False, True, False]
    assert np.isnan(sparse["history"]["val_top1"][1])
    np.testing.assert_allclose(np.delete(sparse["history"]["val_top1"], 1),
                               np.delete(dense["history"]["val_top1"], 1), atol=1e-6)
    np.testing.assert_allclose(sparse["history"]["loss"], dense["history"]["loss"], rtol=1e-5)
    weights = [keras.saving.load_model(os.path.join(d, "model.keras")).get_weights()
               for d in (dense_dir, sparse_dir)]
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _crashed_run(tmp_path):
    """(cfg, workdir) of a tiny vanilla run stopped by an exception at the end of
    epoch 2 (index 1), before that epoch's backup: the folder resumes at epoch 1."""
    import keras

    cfg = dataclasses.replace(ts.Config(), epochs=3, batch_size=16, max_train_examples=64,
                              max_test_examples=32, image_size=8, width=8, export=False)
    workdir = str(tmp_path / "run")

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        ts.train(cfg, workdir, extra_callbacks=[Crash()])
    return cfg, workdir


@pytest.mark.backend_independent
def test_interrupted_run_resumes_from_backup(tmp_path):
    import keras

    cfg, workdir = _crashed_run(tmp_path)
    assert os.path.exists(os.path.join(workdir, "backup"))
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    with open(os.path.join(workdir, "epoch_seconds.json")) as f:
        crashed_times = json.load(f)
    assert set(crashed_times) == {"0", "1"}  # epoch 2's time was written before the crash
    metrics = ts.train(cfg, workdir)
    # The crash came before epoch 2's backup: the second run trained epochs 2
    # and 3; the metrics cover the whole run, its epoch times too.
    assert len(metrics["history"]["loss"]) == 3
    seconds = metrics["seconds_per_epoch"]
    assert len(seconds) == 3 and seconds[0] == crashed_times["0"] and all(s > 0 for s in seconds)
    rows = list(csv.DictReader(open(os.path.join(workdir, "history.csv"))))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    assert int(model.optimizer.iterations) == 3 * (64 // 16)
    assert np.isfinite(metrics["final_top1"])


@pytest.mark.backend_independent
def test_start_run_keeps_the_epoch_times_the_backup_holds(tmp_path):
    """epoch_seconds.json keeps the epochs before the backup's, as history.csv
    does; a new run in a finished folder (no backup) starts without it."""
    from experiments import common

    times = os.path.join(tmp_path, common.EPOCH_SECONDS)
    with open(times, "w") as f:
        json.dump({"0": 1.5, "1": 2.5, "2": 3.5}, f)
    os.makedirs(os.path.join(tmp_path, common.BACKUP))
    with open(os.path.join(tmp_path, common.BACKUP, "training_metadata.json"), "w") as f:
        json.dump({"epoch": 2}, f)
    assert common.start_run(str(tmp_path)) == 2
    with open(times) as f:
        assert json.load(f) == {"0": 1.5, "1": 2.5}
    shutil.rmtree(os.path.join(tmp_path, common.BACKUP))
    assert common.start_run(str(tmp_path)) == 0
    assert not os.path.exists(times)


@pytest.mark.backend_independent
def test_resuming_with_another_recipe_is_refused_before_the_folder_changes(tmp_path):
    cfg, workdir = _crashed_run(tmp_path)

    def snapshot():
        return {os.path.relpath(os.path.join(d, f), workdir): os.path.getmtime(os.path.join(d, f))
                for d, _, files in os.walk(workdir) for f in files}

    before = snapshot()
    changed = dataclasses.replace(cfg, lr=0.01, method="mixup")
    with pytest.raises(ValueError, match=r"other settings \(--method: 'vanilla' in the folder, "
                                         r"'mixup' now; --alpha: None in the folder, 1.0 now; "
                                         r"--lr: 0.05 in the folder, 0.01 now\)"):
        ts.train(changed, workdir)
    assert snapshot() == before  # nothing in the folder touched
    # How it evaluates is not the recipe: that resume goes on.
    metrics = ts.train(dataclasses.replace(cfg, eval_every=2), workdir)
    assert len(metrics["history"]["loss"]) == 3


def test_non_finite_loss_stops_training_before_any_output(tmp_path):
    # Beta(inf, inf) gives NaN mixing weights: the first batch's loss is NaN.
    cfg = dataclasses.replace(ts.Config(), method="mixup", alpha=float("inf"), epochs=2,
                              batch_size=8, max_train_examples=16, max_test_examples=8,
                              image_size=8, width=8, export=True)
    workdir = str(tmp_path / "run")
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 1 .*loss=nan"):
        ts.train(cfg, workdir)
    for name in ("model.keras", "export", "metrics.json", "backup"):
        assert not os.path.exists(os.path.join(workdir, name)), name


@pytest.mark.backend_independent
def test_learning_rate_floor_per_method_and_preset(resolve_supervised):
    def _resolve(*argv):
        return resolve_supervised(list(argv))

    assert _resolve("--method=mixup").min_lr == 0.0  # official static configs: to 0
    cfg = _resolve("--method=amix", "--preset=cifar100")
    assert (cfg.lr, cfg.min_lr, cfg.phi_lr) == (0.1, 0.05, None)  # official: 0.1 -> 0.05
    cfg = _resolve("--method=automix", "--preset=tiny_imagenet")
    assert (cfg.lr, cfg.min_lr, cfg.phi_lr, cfg.phi_min_lr) == (0.2, 0.05, 0.1, 1e-3)
    cfg = _resolve("--method=amix", "--lr=0.2", "--min_lr=0.01", "--phi_lr=0.1")
    assert (cfg.min_lr, cfg.phi_min_lr) == (0.01, pytest.approx(0.005))
    assert _resolve("--method=vanilla", "--preset=tiny_imagenet").phi_lr is None
    with pytest.raises(ValueError, match="--min_lr"):
        _resolve("--method=amix", "--lr=0.1", "--min_lr=0.2")


@pytest.mark.backend_independent
def test_paper_presets_are_the_papers_network_and_official_learned_recipe(resolve_supervised):
    """ResNet-18 at width 64 (not the CPU runs' 16), the official two heads and
    momentum forward, and the official Mix Block cosines (OpenMixup SAMix configs:
    ImageNet encoder 0.1 -> 0 with the Mix Block 0.1 -> 1e-3; CUB 0.001 -> 0 and
    0.01 -> 5e-4); `config_for` resolves a preset as the flags do."""
    for preset in ("cifar100", "cifar10", "tiny_imagenet", "imagenet", "fine_grained"):
        cfg = resolve_supervised(["--method=amix", f"--preset={preset}"])
        assert (cfg.width, cfg.separate_mix_head, cfg.momentum_full_forward) == (64, True, True)
        assert cfg == ts.config_for(preset, method="amix"), preset
    assert resolve_supervised(["--preset=cpu_cifar10"]).width == 16  # DESIGN §12's budget
    cfg = resolve_supervised(["--method=amix", "--preset=imagenet"])
    assert (cfg.lr, cfg.min_lr, cfg.phi_lr, cfg.phi_min_lr) == (0.1, 0.0, 0.1, 1e-3)
    cfg = resolve_supervised(["--method=automix", "--preset=fine_grained"])
    assert (cfg.lr, cfg.min_lr, cfg.phi_lr, cfg.phi_min_lr) == (0.001, 0.0, 0.01, 5e-4)
    cfg = ts.config_for("tiny_imagenet", method="amix", phi_lr=0.2)  # a given rate stays
    assert (cfg.min_lr, cfg.phi_lr, cfg.phi_min_lr) == (0.05, 0.2, 1e-3)
    # α from the larger data sets' grids (OpenMixup's benchmark tables), else CIFAR's.
    alpha = {(preset, method): resolve_supervised([f"--preset={preset}", f"--method={method}"])
             .alpha for preset in ("cifar100", "tiny_imagenet", "imagenet")
             for method in ("mixup", "cutmix", "manifoldmix", "puzzlemix")}
    assert [alpha["cifar100", m] for m in ("mixup", "cutmix", "manifoldmix", "puzzlemix")] == \
        [1.0, 0.2, 2.0, 1.0]
    assert [alpha["tiny_imagenet", m] for m in ("mixup", "cutmix", "manifoldmix", "puzzlemix")] \
        == [1.0, 1.0, 0.2, 1.0]
    assert [alpha["imagenet", m] for m in ("mixup", "cutmix", "manifoldmix", "puzzlemix")] == \
        [0.2, 1.0, 0.2, 1.0]
    assert resolve_supervised(["--preset=imagenet", "--method=mixup", "--alpha=0.5"]).alpha == 0.5
    assert ts.config_for("imagenet", method="cutmix").alpha == 1.0


@pytest.mark.backend_independent
def test_another_dataset_takes_its_own_size_augmentation_and_stem(resolve_supervised, tmp_path,
                                                                   capsys):
    """A preset's image size, augmentation and stem are its own data set's: with
    another --dataset the run takes the data set's (the demo's 16 px digits
    settings would otherwise shrink any folder to 16 px); a flag given wins."""
    from PIL import Image

    path = str(tmp_path / "d.npz")
    np.savez(path, x_train=np.zeros((4, 40, 40, 3), np.uint8), y_train=np.arange(4) % 2,
             x_test=np.zeros((2, 40, 40, 3), np.uint8), y_test=np.arange(2))
    cfg = resolve_supervised([f"--dataset={path}"])  # the demo preset (digits, 16 px)
    assert (cfg.image_size, cfg.augment, cfg.stem) == (40, "imagenet", "cifar")
    assert "--image_size=40" in capsys.readouterr().out
    cfg = resolve_supervised([f"--dataset={path}", "--image_size=24", "--augment=none"])
    assert (cfg.image_size, cfg.augment, cfg.stem) == (24, "none", "cifar")
    cfg = resolve_supervised(["--dataset=stl10"])  # a registered data set: 96 px
    assert (cfg.image_size, cfg.stem) == (96, "imagenet")
    assert resolve_supervised(["--dataset=digits"]).image_size == 16  # the preset's own
    odd = str(tmp_path / "odd.npz")  # 30 px: down to 28, a multiple of stage 3's stride
    np.savez(odd, x_train=np.zeros((4, 30, 30), np.uint8), y_train=np.arange(4) % 2)
    cfg = resolve_supervised([f"--dataset={odd}", "--method=amix", "--test_split=train"])
    assert (cfg.image_size, cfg.augment, cfg.stem) == (28, "cifar", "cifar")
    cfg = resolve_supervised(["--preset=cpu_cifar10", f"--dataset={path}"])
    assert (cfg.image_size, cfg.stem) == (40, "cifar")
    # A folder whose images differ in size: 224 px with the ImageNet stem.
    for name, size in (("a", (300, 200)), ("b", (500, 400))):
        os.makedirs(tmp_path / "f" / "train" / name)
        Image.new("RGB", size).save(tmp_path / "f" / "train" / name / "0.jpg")
    cfg = resolve_supervised([f"--dataset={tmp_path / 'f'}", "--test_split=train"])
    assert (cfg.image_size, cfg.augment, cfg.stem) == (224, "imagenet", "imagenet")
    cfg = resolve_supervised([f"--dataset={tmp_path / 'f'}", "--test_split=train", "--smoke"])
    assert (cfg.image_size, cfg.stem) == (16, "cifar")  # --smoke: tiny images, CIFAR stem
    with pytest.raises(ValueError, match="nowhere"):
        resolve_supervised([f"--dataset={tmp_path / 'nowhere'}"])


@pytest.mark.backend_independent
def test_another_dataset_without_the_presets_test_split(resolve_supervised, tmp_path, capsys):
    """An ImageNet-style folder (train/ and val/) evaluates on val/; a data set
    with no stand-in, or a split flag naming a split it lacks, is a ValueError
    naming the flag and the data set's splits, before anything is read."""
    from PIL import Image

    for split in ("train", "val"):
        for name in ("a", "b"):
            os.makedirs(tmp_path / "f" / split / name)
            Image.new("RGB", (8, 8)).save(tmp_path / "f" / split / name / "0.png")
    cfg = resolve_supervised([f"--dataset={tmp_path / 'f'}"])
    assert (cfg.train_split, cfg.test_split) == ("train", "val")
    assert "--test_split=val" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"`--test_split` .*\['train', 'val'\]; received 'nope'"):
        resolve_supervised([f"--dataset={tmp_path / 'f'}", "--test_split=nope"])
    with pytest.raises(ValueError, match=r"`--train_split` .*received 'test'"):
        resolve_supervised([f"--dataset={tmp_path / 'f'}", "--train_split=test"])
    one = str(tmp_path / "one.npz")  # a single split: no stand-in for "test"
    np.savez(one, images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4) % 2)
    with pytest.raises(ValueError, match=r"`--test_split` .*\['train'\]; received 'test' "
                                         r"\(the preset's\)"):
        resolve_supervised([f"--dataset={one}"])
    assert resolve_supervised([f"--dataset={one}", "--test_split=train"]).test_split == "train"


@pytest.mark.backend_independent
def test_photos_are_evaluated_on_their_centre_crop(tmp_path):
    """The test pipeline of an ImageNet-augmented run on images larger than
    the training size: shorter side to size / 0.875, centre crop (the official
    resize 256 / crop 224); images at the training size are only resized."""
    from PIL import Image

    from experiments import common
    from keras_amix.data import DatasetInfo

    def info(size):
        return DatasetInfo(name="x", num_classes=2, image_size=size, channels=3, mean=None,
                           std=None, splits=("train",))

    assert common.eval_augment("imagenet", info(None), 224) == "imagenet"  # sizes differ
    assert common.eval_augment("imagenet", info((500, 375)), 224) == "imagenet"
    assert common.eval_augment("imagenet", info((64, 64)), 64) is None  # Tiny-ImageNet
    assert common.eval_augment("cifar", info((40, 40)), 32) is None
    # Through the run's datasets: a 56 x 28 test image whose left and right
    # quarters are white and its middle black; at 14 px the crop (shorter side 28 ->
    # 16, 32 x 16, centre 14 x 14) is black, a squash would keep the white sides.
    for split in ("train", "test"):
        for name in ("a", "b"):
            os.makedirs(tmp_path / split / name)
            image = np.full((28, 56, 3), 255, np.uint8)
            image[:, 14:42] = 0
            Image.fromarray(image).save(tmp_path / split / name / "0.png")
    cfg = dataclasses.replace(ts.Config(), dataset=str(tmp_path), image_size=14,
                              augment="imagenet", batch_size=2, epochs=1, warmup_epochs=0)
    _, test, _, _ = common.datasets(cfg)
    x, _ = next(iter(test))
    assert x.shape == (2, 14, 14, 3)
    assert np.ptp(np.asarray(x)[..., 0]) < 1e-5  # one value: the black middle, normalised


@pytest.mark.backend_independent
def test_momentum_rule_per_learned_method(resolve_supervised):
    assert resolve_supervised(["--method=amix"]).momentum_horizon == 0.02
    assert resolve_supervised(["--method=automix"]).momentum_horizon == 0.0
    assert resolve_supervised(["--method=automix", "--momentum_horizon=0.05"]).momentum_horizon \
        == 0.05
    assert resolve_supervised(["--method=mixup"]).momentum_horizon is None
    # The config a test or benchmark builds directly gets the same defaults.
    assert ts.method_defaults(dataclasses.replace(ts.Config(), method="automix")) \
        .momentum_horizon == 0.0


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_optimizer_weight_decay_mode_and_cosine_floor(mode):
    import keras

    from keras_amix.training.optimizers import CoupledSGD

    cfg = dataclasses.replace(ts.Config(), method="amix", epochs=4, warmup_epochs=1, lr=0.1,
                              min_lr=0.05, weight_decay=1e-4, weight_decay_mode=mode)
    optimizer = ts.make_optimizer(cfg, steps_per_epoch=10)
    assert isinstance(optimizer, CoupledSGD) == (mode == "coupled")
    assert isinstance(optimizer, keras.optimizers.SGD)
    schedule = optimizer.learning_rate if not callable(optimizer._learning_rate) else \
        optimizer._learning_rate
    lr = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 10, 25, 40)]
    # Warm-up from 0 to the peak at step 10, then a cosine to the floor at step 40:
    # at step 25 (half way) 0.05 + (0.1 - 0.05) * (1 + cos(pi / 2)) / 2 = 0.075.
    assert lr == pytest.approx([0.0, 0.1, 0.075, 0.05], abs=1e-6)
    if mode == "coupled":
        assert optimizer.coupled_weight_decay == 1e-4 and optimizer.weight_decay is None
    else:
        assert optimizer.weight_decay == 1e-4


@pytest.mark.backend_independent
def test_smoke_shrinks_what_the_command_line_did_not_set(resolve_supervised):
    cfg = resolve_supervised(["--smoke"])
    assert (cfg.epochs, cfg.batch_size, cfg.per_class_limit, cfg.width, cfg.image_size) == \
        (2, 8, 8, 8, 16)
    assert cfg.warmup_epochs == 1  # shorter than the 2-epoch run (the demo preset's 1 kept)
    # A flag given on the command line wins over --smoke, as it wins over a preset.
    cfg = resolve_supervised(["--smoke", "--per_class_limit=3", "--width=4", "--epochs=1"])
    assert (cfg.per_class_limit, cfg.width, cfg.epochs, cfg.batch_size) == (3, 4, 1, 8)
    assert cfg.warmup_epochs == 0  # a warm-up shorter than the 1-epoch run
    cfg = resolve_supervised(["--smoke", "--epochs=3", "--warmup_epochs=2"])
    assert (cfg.epochs, cfg.warmup_epochs) == (3, 2)


def test_readme_demo_flags_resolve(resolve_supervised):
    """README command (a)'s flags (scripts/demo.sh) are what the binary accepts:
    AMix on the embedded scattered digits with the two short-budget options."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "scripts", "demo.sh")) as f:
        script = f.read().replace("\\\n", " ")
    line = next(line for line in script.splitlines() if "experiments.train_supervised" in line)
    argv = line.split("experiments.train_supervised", 1)[1].replace('"$@"', "").split()
    cfg = resolve_supervised(argv)
    assert (cfg.method, cfg.dataset, cfg.image_size) == ("amix", "scattered_digits", 24)
    assert cfg.phi_lam_adjust and cfg.separate_mix_head and cfg.momentum_full_forward
    assert ts.mix_block_switches(cfg) == {"var_weight": 10.0}
