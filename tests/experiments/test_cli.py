"""The binaries' command lines: every flag checked at parse time, before Keras loads.

The bad-flag cases run in three small subprocesses (one per binary: the
binaries share flag names), which parse the flags and call `main` in-process
and report, per case, the exit status, what went to stderr and whether
TensorFlow or Keras had been imported by then.
"""

import dataclasses
import json
import os
import stat
import subprocess
import sys

import pytest

from experiments import common
from experiments import linear_eval
from experiments import train_selfsup
from experiments import train_supervised

# Flag parsing and name tables are plain Python: one pass (the TF process) suffices.
pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARIES = {"train_supervised": train_supervised, "train_selfsup": train_selfsup,
            "linear_eval": linear_eval}

# Parses each case's flags and runs main() (with train/evaluate replaced by a
# recorder): prints one JSON row per case.
CASES_SCRIPT = r"""
import contextlib, importlib, io, json, os, sys
from absl import flags
from experiments import common
mod = importlib.import_module("experiments." + sys.argv[1])
cases = json.loads(sys.argv[2])
sys.argv = [mod.__file__]  # what `python -m` gives: errors start with "<binary>.py: "
ran = {}
def record(cfg, workdir, *args):
    ran.update(onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS"), deterministic=cfg.deterministic
               if hasattr(cfg, "deterministic") else None)
for name in ("train", "evaluate"):
    if hasattr(mod, name):
        setattr(mod, name, record)
rows = []
for args in cases:
    err, code = io.StringIO(), None
    ran.clear()
    os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
    with contextlib.redirect_stderr(err):
        try:
            mod.main(mod.parse_flags(sys.argv + args))
        except SystemExit as exit:
            code = exit.code
    mod.FLAGS.unparse_flags()
    flags.FLAGS.unparse_flags()
    rows.append(dict(args=args, code=code, stderr=err.getvalue(), ran=dict(ran),
                     heavy=sorted(m for m in ("tensorflow", "keras", "jax") if m in sys.modules)))
print(json.dumps(rows))
"""

BAD_FLAGS = {
    "train_supervised": [
        (["--alpha=inf"], "--alpha"), (["--alpha=0"], "--alpha"), (["--lr=0"], "--lr"),
        (["--lr=nan"], "--lr"), (["--weight_decay=-1"], "--weight_decay"),
        (["--momentum=1"], "--momentum"), (["--warmup_epochs=-1"], "--warmup_epochs"),
        # not < the demo's epochs
        ([f"--warmup_epochs={train_supervised.PRESETS['demo'].epochs}"], "--warmup_epochs"),
        (["--max_train_examples=0"], "--max_train_examples"),
        (["--max_test_examples=-3"], "--max_test_examples"),
        (["--per_class_limit=0"], "--per_class_limit"), (["--epochs=0"], "--epochs"),
        (["--eval_every=0"], "--eval_every"),
        (["--batch_size=0"], "--batch_size"), (["--width=0"], "--width"),
        (["--image_size=0"], "--image_size"), (["--seed=-1"], "--seed"),
        (["--data_dir=/tmp"], "--data_dir"), (["--download"], "--download"),
        (["--dataset=/tmp/images", "--download"], "--download"),
        (["--method=amix", "--feature_stage=stage5"], "--feature_stage"),
        (["--method=amix", "--mix_loss=focal"], "--mix_loss"),
        (["--method=amix", "--image_size=30"], "--image_size"),  # not a multiple of 4
        (["--method=amix", "--momentum_base=1.5"], "--momentum_base"),
        (["--method=amix", "--momentum_final=-0.1"], "--momentum_final"),
        (["--method=amix", "--phi_lr=0"], "--phi_lr"),
        (["--method=amix", "--mask_summary_every=-1"], "--mask_summary_every"),
        (["--method=amix", "--mix_block=attention"], "--mix_block"),
        (["--phi_lr=0.1"], "--phi_lr"),  # vanilla has no Mix Block
        (["--method=mixup", "--mix_loss=pbce"], "--mix_loss"),
        (["--alpha=1"], "--alpha"),  # vanilla mixes nothing
        (["--method=nope"], "--method"), (["--backbone=resnet19"], "--backbone"),
        (["--stem=tiny"], "--stem"), (["--augment=autoaugment"], "--augment"),
        (["--strategy=tpu"], "--strategy"), (["--dataset="], "--dataset"),
        (["--workdir="], "--workdir"), (["--alph=1"], "alph"), (["alpha=1"], "alpha=1"),
    ],
    "train_selfsup": [
        (["--alpha=inf"], "--alpha"), (["--method=mochi", "--alpha=1"], "--alpha"),
        (["--mix_weight=-1", "--method=mixup"], "--mix_weight"),
        (["--mix_weight=2"], "--mix_weight"),  # mocov2 has no mixup term
        (["--temperature=0"], "--temperature"), (["--key_momentum=1.5"], "--key_momentum"),
        (["--queue_size=8"], "--queue_size"), (["--projection_dim=0"], "--projection_dim"),
        (["--hidden_dim=0"], "--hidden_dim"), (["--warmup_epochs=20"], "--warmup_epochs"),
        (["--max_train_examples=0"], "--max_train_examples"), (["--lr=-1"], "--lr"),
        (["--data_dir=/tmp"], "--data_dir"), (["--method=puzzlemix"], "--method"),
        (["--export_embedding=logits"], "--export_embedding"),
    ],
    "linear_eval": [
        ([], "--encoder"), (["--encoder=enc.keras", "--epochs=0"], "--epochs"),
        (["--encoder=enc.keras", "--momentum=-0.5"], "--momentum"),
        (["--encoder=enc.keras", "--lr=inf"], "--lr"),
        (["--encoder=enc.keras", "--decay_at=0.6,0.3"], "--decay_at"),
        (["--encoder=enc.keras", "--decay_at=half"], "--decay_at"),
        (["--encoder=enc.keras", "--image_size=0"], "--image_size"),
        (["--encoder=enc.keras", "--max_train_examples=0"], "--max_train_examples"),
        (["--encoder=enc.keras", "--data_dir=/tmp"], "--data_dir"),
        (["--encoder=" + ROOT], "--trust_saved_model"),  # a folder: a SavedModel
    ],
}
# Valid command lines: main reaches train()/evaluate() without importing Keras.
GOOD_FLAGS = {
    "train_supervised": [["--method=mixup", "--alpha=1.5", "--deterministic"],
                         ["--smoke", "--epochs=1"]],  # the smoke warm-up fits one epoch
    "train_selfsup": [["--method=mixup", "--mix_weight=0.5", "--deterministic"]],
    "linear_eval": [["--encoder=enc.keras", "--max_train_examples=100"]],
}


def _run_cases(binary, cases):
    proc = subprocess.run([sys.executable, "-c", CASES_SCRIPT, binary, json.dumps(cases)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.backend_independent
@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_bad_flags_are_one_usage_line_before_keras_loads(binary):
    bad = BAD_FLAGS[binary]
    rows = _run_cases(binary, [args for args, _ in bad] + GOOD_FLAGS[binary])
    for (args, flag), row in zip(bad, rows):
        lines = row["stderr"].strip().splitlines()
        assert row["code"] == 2 and len(lines) == 1, (args, row)
        assert lines[0].startswith(f"{binary}.py: error: ") and flag in lines[0], (args, row)
        assert not row["ran"] and not row["heavy"], (args, row)
    for row in rows[len(bad):]:
        assert row["code"] is None and not row["stderr"] and not row["heavy"], row
        assert row["ran"], row
        if "--deterministic" in row["args"]:
            assert row["ran"]["onednn"] == "0" and row["ran"]["deterministic"], row


@pytest.mark.backend_independent
def test_command_line_usage_error():
    proc = subprocess.run([sys.executable, "-m", "experiments.train_supervised", "--alpha=inf"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "train_supervised.py: error: flag --alpha=inf: `--alpha` must be a finite number > 0 "
        "(or unset); received inf. (see --help)"]


@pytest.mark.backend_independent
@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_help_lists_every_flag_of_the_binary(binary):
    # The shared flags are defined in common.py but belong to the binary:
    # absl's --help lists the main module's flags only.
    proc = subprocess.run([sys.executable, "-m", f"experiments.{binary}", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    listed = {line.split(":")[0].strip().replace("[no]", "")
              for line in proc.stdout.splitlines() if line.startswith("  --")}
    wanted = {f"--{name}" for name in BINARIES[binary].CONFIG_FLAGS}
    assert wanted | {"--preset", "--smoke", "--workdir"} <= listed, wanted - listed
    assert f"(default: '{BINARIES[binary].Config.batch_size}')" in proc.stdout


@pytest.mark.backend_independent
@pytest.mark.parametrize("binary", ["train_supervised", "train_selfsup", "linear_eval",
                                    "reproduce", "visualize_amix", "visualize_mixers"])
def test_help_exits_0_without_loading_keras(binary):
    # `-X importtime` lists every module imported: --help must not pay for Keras / TF.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", f"experiments.{binary}",
                           "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "flags:" in proc.stdout and "  --" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not {"keras", "tensorflow", "jax", "torch"} & imported


def test_binaries_keep_their_own_flags_in_one_process():
    # Same flag names, different defaults: each binary's FlagValues is its own.
    assert train_supervised.FLAGS is not train_selfsup.FLAGS
    for module in BINARIES.values():
        module.FLAGS.unparse_flags()
        module.FLAGS([module.__name__])
        for field in dataclasses.fields(module.Config):
            value = module.FLAGS[field.name].value
            if field.type is tuple:
                value = tuple(type(d)(v) for d, v in zip(field.default, value))
            assert value == field.default, (module.__name__, field.name)
        module.FLAGS.unparse_flags()


def test_config_fields_become_flags_with_their_help_and_check():
    from absl import flags

    @dataclasses.dataclass(frozen=True)
    class Toy:
        epochs: int = 3  # shared: help and check from common.SHARED_FLAGS / SHARED_CHECKS
        scale: float = common.flag(0.5, "A scale in [0, 1].", common.number(0, 1))
        names: tuple = common.flag(("a",), "Repeatable.", common.text())
        fractions: tuple = common.flag((0.1, 0.2), "Comma-separated.", comma_list=True)

    values = flags.FlagValues()
    checks = common.define_config_flags(Toy, values)
    assert set(checks) == {"epochs", "scale", "names"}
    assert values["epochs"].help == common.SHARED_FLAGS["epochs"]
    assert checks["epochs"] is common.SHARED_CHECKS["epochs"]
    values(["toy", "--scale=0.25", "--names=x", "--names=y", "--fractions=0.3,0.4"])
    assert (values.scale, values.names, values.fractions) == (0.25, ["x", "y"], ["0.3", "0.4"])
    assert values["epochs"].value == 3 and not values["epochs"].present
    with pytest.raises(ValueError, match="--scale"):
        checks["scale"]("scale", 2.0)

    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        mystery: int = 1

    with pytest.raises(TypeError, match="mystery"):
        common.define_config_flags(Undocumented, flags.FlagValues())


@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_every_flag_has_a_check(binary):
    module = BINARIES[binary]
    fields = {f.name for f in dataclasses.fields(module.Config) if f.type is not bool}
    assert fields <= set(module.CHECKS), fields - set(module.CHECKS)
    # ... and the presets pass them.
    for name, preset in module.PRESETS.items():
        common.check_fields(preset, module.CHECKS)


@pytest.mark.parametrize("check,good,bad", [
    (common.number(0, low_open=True), [1e-9, 3], [0, -1, float("inf"), float("nan"), None, True]),
    (common.number(0, 1, high_open=True), [0, 0.5], [1, 1.0, -0.1]),
    (common.number(0, 1), [0, 1.0], [1.01, float("-inf")]),
    (common.LIMIT, [None, 1, 5], [0, -1, 2.0]),
    (common.SEED, [0, 2**32 - 1], [-1, 2**32]),
    (common.text(), ["a"], ["", "  ", None]),
    (common.text(optional=True), [None, "a"], [""]),
    (common.choice(("a", "b")), ["a"], ["c", None]),
])
def test_checks_accept_and_refuse(check, good, bad):
    for value in good:
        check("flag", value)
    for value in bad:
        with pytest.raises(ValueError, match="`--flag`"):
            check("flag", value)


def test_names_kept_in_experiments_match_the_library():
    from keras_amix import backbones
    from keras_amix.data import registry
    from keras_amix.models import amix

    assert common.MIX_LOSSES == amix.MIX_LOSSES
    assert common.FEATURE_STAGES == tuple(n for n in backbones.STAGE_NAMES if n != "stem")
    for stem, strides in common.STAGE_STRIDES.items():
        backbone = backbones.resnet(18, width=8, stem=stem, input_shape=(32, 32, 3))
        assert strides == {s: backbones.output_stride(backbone, s) for s in strides}, stem
    by_source = lambda source: sorted(k for k, v in registry.DATASETS.items()  # noqa: E731
                                      if v.source == source)
    assert sorted(common.TFDS_DATASETS) == by_source("tfds") == sorted(registry.TFDS_NAMES)
    assert sorted(common.EMBEDDED_DATASETS) == by_source("digits")


def test_binaries_take_mixers_and_alpha_from_the_registry():
    from keras_amix import mixers

    assert sorted(train_supervised.STATIC_METHODS) == mixers.available()
    for name in train_supervised.STATIC_METHODS + train_selfsup.CROSS_VIEW_METHODS:
        cls = mixers.get_class(name)
        assert train_supervised.DEFAULT_ALPHA[name] == cls.default_alpha, name
        if name in train_selfsup.CROSS_VIEW_METHODS:
            assert train_selfsup.DEFAULT_ALPHA[name] == cls.default_alpha, name
            assert not cls.requires_saliency and not cls.mixes_hidden, name


def test_write_json_gives_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        common.write_json(str(tmp_path / "a.json"), {"x": 1})
        os.umask(0o027)
        common.write_json(str(tmp_path / "b.json"), {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) == 0o640
    assert json.load(open(tmp_path / "a.json")) == {"x": 1}
