"""Killing the training binaries (SIGKILL) and rerunning them.

Each killed run is the real binary in a subprocess, started through a small
wrapper (`WRAPPER`) that swaps the binary's `train` for one adding a kill
point: at the start of a given batch (mid-epoch), inside the backup's
weights write (the file is cut to half its size first, as a kill during
h5py's write leaves it), or inside the SavedModel write. The rerun is the
plain binary. With `--deterministic` the rerun must end with the weights of
an uninterrupted run (one per binary, shared by the module).
"""

import csv
import glob
import io
import json
import os
import signal
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tiny runs: 20 training images in batches of 8 (2 steps per epoch), 16 x 16,
# width 8 (--smoke would set 8 images per class). Eager steps: what is checked
# (the saved states, the backups, the files) does not depend on tracing, which
# would cost more than these few steps (the compiled binaries run in the smoke
# suite of scripts/test.sh and the other binary tests).
TINY = ["--batch_size=8", "--per_class_limit=2", "--image_size=16", "--width=8",
        "--export=false", "--deterministic", "--run_eagerly"]
SUPERVISED = TINY + ["--test_per_class_limit=1"]
SELFSUP = TINY + ["--queue_size=32", "--hidden_dim=32", "--projection_dim=16"]
RUNS = {
    "vanilla": ("experiments.train_supervised", SUPERVISED + ["--epochs=3"]),
    "amix": ("experiments.train_supervised",
             SUPERVISED + ["--method=amix", "--epochs=2", "--mask_summary_every=0"]),
    "mocov2": ("experiments.train_selfsup", SELFSUP + ["--epochs=2"]),
    "amix_c": ("experiments.train_selfsup",
               SELFSUP + ["--method=amix_c", "--epochs=2", "--num_clusters=4"]),
}

# sys.argv: [-c, binary module, kill point, binary flags...]. Kill points:
# "batch:E:B" at the start of batch B of epoch E (0-based); "backup:K" in
# the K-th backup weights write; "export" in the SavedModel write.
WRAPPER = r"""
import importlib, os, signal, sys
from absl import app
from experiments import common

binary = importlib.import_module(sys.argv.pop(1))
point = sys.argv.pop(1).split(":")
original_train = binary.train


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def train(cfg, workdir, extra_callbacks=()):
    import keras

    extra = list(extra_callbacks)
    if point[0] == "batch":
        class Kill(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_begin(self, batch, logs=None):
                if (self.epoch, batch) == (int(point[1]), int(point[2])):
                    die()

        extra.append(Kill())
    elif point[0] == "backup":
        save_weights, calls = keras.Model.save_weights, []

        def cut_save_weights(model, filepath, *args, **kwargs):
            save_weights(model, filepath, *args, **kwargs)
            calls.append(filepath)
            if len(calls) == int(point[1]):
                with open(filepath, "r+b") as f:
                    f.truncate(os.path.getsize(filepath) // 2)
                die()

        keras.Model.save_weights = cut_save_weights
    elif point[0] == "export":
        archive_class = type(keras.export.ExportArchive())  # the backend's subclass
        write_out = archive_class.write_out

        def cut_write_out(archive, filepath, *args, **kwargs):
            write_out(archive, filepath, *args, **kwargs)
            die()

        archive_class.write_out = cut_write_out
    return original_train(cfg, workdir, extra_callbacks=extra)


binary.train = train
app.run(binary.main, flags_parser=binary.parse_flags)
"""


def _env():
    # One inter-op and one intra-op thread: TensorFlow's CPU step is bit-identical
    # between two runs only when no op order depends on thread scheduling (under
    # load, multi-threaded runs of the AMix step differed in loss_phi in the 4th
    # decimal: CI of 2026-12-03), and bit-exact resume is what these tests check.
    return dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
                TF_ENABLE_ONEDNN_OPTS="0", TF_NUM_INTEROP_THREADS="1",
                TF_NUM_INTRAOP_THREADS="1")


def _run(name, workdir, *extra, kill=None):
    module, args = RUNS[name]
    args = [*args, f"--workdir={workdir}", *extra]
    if kill is None:
        command = [sys.executable, "-m", module, *args]
    else:
        command = [sys.executable, "-c", WRAPPER, module, kill, *args]
    proc = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=900)
    expected = 0 if kill is None else -signal.SIGKILL
    assert proc.returncode == expected, (proc.returncode, proc.stdout[-3000:],
                                         proc.stderr[-5000:])
    return proc.stdout + proc.stderr


def _epochs_run(output):
    """The epochs (1-based) a run's Keras log started."""
    return [int(line.split()[1].split("/")[0]) for line in output.splitlines()
            if line.startswith("Epoch ") and "/" in line]


def _weights(workdir):
    """{path: array} of every variable in workdir/model.keras."""
    with zipfile.ZipFile(os.path.join(workdir, "model.keras")) as archive:
        data = io.BytesIO(archive.read("model.weights.h5"))
    weights = {}
    with h5py.File(data, "r") as f:
        f.visititems(lambda path, item: weights.__setitem__(path, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return weights


def _history_epochs(workdir):
    with open(os.path.join(workdir, "history.csv"), newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _backup_epoch(workdir):
    with open(os.path.join(workdir, "backup", "training_metadata.json")) as f:
        return json.load(f)["epoch"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per entry of RUNS, made on first use."""
    runs = {}

    def get(name):
        if name not in runs:
            workdir = str(tmp_path_factory.mktemp(f"reference_{name}"))
            _run(name, workdir)
            with open(os.path.join(workdir, "metrics.json")) as f:
                runs[name] = (_weights(workdir), json.load(f))
        return runs[name]

    return get


def _check_finished(workdir, name, reference, epochs):
    weights, metrics_ref = reference(name)
    assert _history_epochs(workdir) == list(range(epochs))  # each epoch once
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    # Metrics over the whole run, equal to the uninterrupted run's.
    assert {len(v) for v in metrics["history"].values()} == {epochs}
    assert metrics["history"] == metrics_ref["history"]
    assert len(metrics["seconds_per_epoch"]) == epochs  # every process's epochs timed
    if "median_last10_top1" in metrics:
        assert metrics["median_last10_top1"] == metrics_ref["median_last10_top1"]
        assert metrics["median_last10_top1"] == float(np.median(metrics["history"]["val_top1"]))
    # Nothing half-written is left, and the backup is gone once all is written.
    assert not os.path.exists(os.path.join(workdir, "backup"))
    assert not glob.glob(os.path.join(workdir, ".*")) + glob.glob(os.path.join(workdir, "*tmp*"))
    # Bit-exact: the same weights as the uninterrupted run.
    resumed = _weights(workdir)
    assert resumed.keys() == weights.keys()
    different = [k for k in weights if not np.array_equal(weights[k], resumed[k])]
    assert not different, different


def test_vanilla_killed_in_backup_mid_epoch_and_in_export(tmp_path, reference):
    workdir = str(tmp_path / "run")
    # 1. Killed while writing the backup after epoch 2: epoch 1's backup holds.
    _run("vanilla", workdir, kill="backup:2")
    assert _backup_epoch(workdir) == 1
    assert glob.glob(os.path.join(workdir, "backup", ".tmp-*"))  # the cut file
    assert _history_epochs(workdir) == [0, 1]  # epoch 2's row, not in the backup
    # 2. Resumes at epoch 2 (not 1); killed in the middle of epoch 3.
    output = _run("vanilla", workdir, kill="batch:2:1")
    assert _epochs_run(output) == [2, 3]
    assert _backup_epoch(workdir) == 2
    # 3. Trains epoch 3, then is killed while the SavedModel is written.
    output = _run("vanilla", workdir, "--export=true", kill="export")
    assert _epochs_run(output) == [3]
    assert glob.glob(os.path.join(workdir, ".export.tmp-*"))
    # 4. A complete backup: no training, the outputs are written again.
    output = _run("vanilla", workdir, "--export=true")
    assert _epochs_run(output) == []
    _check_finished(workdir, "vanilla", reference, epochs=3)
    umask = os.umask(0)
    os.umask(umask)
    export = os.path.join(workdir, "export")
    assert os.stat(export).st_mode & 0o777 == 0o777 & ~umask
    assert os.stat(os.path.join(export, "saved_model.pb")).st_mode & 0o777 == 0o666 & ~umask


def test_amix_killed_mid_epoch(tmp_path, reference):
    workdir = str(tmp_path / "run")
    _run("amix", workdir, kill="batch:1:1")
    assert _backup_epoch(workdir) == 1
    output = _run("amix", workdir)
    assert _epochs_run(output) == [2]
    _check_finished(workdir, "amix", reference, epochs=2)


def test_mocov2_killed_in_backup(tmp_path, reference):
    workdir = str(tmp_path / "run")
    _run("mocov2", workdir, kill="backup:2")
    assert _backup_epoch(workdir) == 1
    output = _run("mocov2", workdir)
    assert _epochs_run(output) == [2]
    _check_finished(workdir, "mocov2", reference, epochs=2)


def test_amix_c_killed_mid_epoch_keeps_its_clusters(tmp_path, reference):
    """AMix-C's ODC memory (features, labels, centroids) is in the backup: the
    rerun restores it instead of running k-means again, and ends bit-exact."""
    workdir = str(tmp_path / "run")
    first = _run("amix_c", workdir, kill="batch:1:1")
    assert "k-means" in first
    assert _backup_epoch(workdir) == 1
    output = _run("amix_c", workdir)
    assert "k-means" not in output  # the memory came back with the backup
    assert _epochs_run(output) == [2]
    _check_finished(workdir, "amix_c", reference, epochs=2)
    assert any("odc" in key for key in _weights(workdir))
