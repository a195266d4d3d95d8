r"""Seeded reproduction suites: every (row, seed) of a suite through the binaries.

Each run is `python -m experiments.train_supervised ...` in its own folder
`WORKDIR/<row>/seed<k>` (self-supervised suites, `ssl-cifar10`: `train_selfsup`
into `.../pretrain`, then `linear_eval` of its encoder into the run folder),
`--jobs` at a time (several small runs share one GPU well; on a CPU use 1,
except for `smoke`, whose runs are mostly start-up and tracing,
single-threaded: it runs 2 at a time). A run is finished when its
`metrics.json` exists (the binary writes it last), so `--resume` skips finished
runs and lets the binary itself resume an interrupted one from its backup.
While runs go, a line gives the runs done, each running run's number and epoch,
the time elapsed and an estimate of the time left (at the rate of the last half
hour of work). At the end (and after each
finished run) the suite writes, atomically:

    results.json   every run's history and the per-row aggregates
    results.md     mean ± std over seeds of the median top-1 of the last 10
                   epochs (online and momentum encoder), seconds per epoch
                   (each run's fastest training epoch: robust to a machine
                   shared part of the time) and the cost relative to vanilla
    accuracy_vs_time.png   top-1 against training time per epoch, with error
                   bars (the paper's Fig. 5, left)
    masks.png      the learned masks and mixed images of each learnable row on
                   the same pairs at λ = 0.3, 0.5, 0.7 (the paper's Fig. 4): the
                   `masks.png` each seed-0 run draws beside its model.keras,
                   redrawn here only if missing or older than the model

Examples:

    python -m experiments.reproduce --suite=smoke --seeds=1
    python -m experiments.reproduce --suite=ssl-cifar10 --seeds=3 --jobs=8 \
        --data=cifar10_5k.npz --run_flag=--epochs=400
    python -m experiments.reproduce --suite=cifar10-5k --seeds=3 --jobs=1 \
        --data=/tmp/data/cifar10-jpg --resume
    python -m experiments.reproduce --suite=cifar10-5k --seeds=3 \
        --suite_workdir=runs/reproduce/cifar10-5k --report   # the table so far
"""

import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

from experiments import common


@dataclasses.dataclass(frozen=True)
class Row:
    """One table row: a label, the binary flags that make it, its run time
    relative to the suite's base row (None: `LEARNED_COST` for a learned
    method, else 1), for the time-left estimate, and whether it is a follow-up
    (a variant of a method, started only after every seed of the other rows)."""

    label: str
    flags: tuple  # ("--method=amix", "--mix_block=attention=cross", ...)
    cost: float = None
    followup: bool = False

    @property
    def learnable(self):
        """A Mix Block method: its runs draw masks (and take longest)."""
        return any(f"--method={m}" in self.flags for m in LEARNED_METHODS)

    @property
    def weight(self):
        if self.cost is not None:
            return self.cost
        return LEARNED_COST if self.learnable else 1.0


LEARNED_METHODS = ("automix", "amix", "amix_i", "amix_c")
# An AutoMix / AMix step costs 2.7 vanilla steps (BUILD_NOTES: 2.70-2.72 on this
# CPU, 2.66-2.69 on the H200); the static mixers about one.
LEARNED_COST = 2.7


@dataclasses.dataclass(frozen=True)
class Suite:
    rows: tuple
    flags: tuple = ()  # flags shared by every row
    # Flags for the AutoMix/AMix rows only (the binary refuses them with other methods).
    learned_flags: tuple = ()
    needs_data: bool = False  # the data set is not embedded: --data is required
    jobs: int = 1  # runs at a time unless --jobs says otherwise
    description: str = ""
    # A self-supervised suite: each run pretrains with train_selfsup (into
    # RUN/pretrain), then linear_eval with these flags reads its encoder.keras
    # (into RUN); the table is the linear top-1.
    linear_flags: tuple = None
    base: str = "vanilla"  # the row costs are relative to

    @property
    def selfsup(self):
        return self.linear_flags is not None


def _methods(*names):
    return tuple(Row(name, (f"--method={name}",)) for name in names)


# Table 8 of the paper, one switch of Mix Block+ at a time on top of AutoMix.
_TABLE8 = (("lam_encoding", "adaptive"), ("content", "nonlinear"), ("attention", "global"),
           ("upsample", "bilinear"), ("mask_loss", "mean+var"), ("lam_adjust_prob", "1.0"))
# Table 7, the supervised Mix Block losses of AMix.
_TABLE7 = ("ce", "pbce", "ce+pbce", "bce", "ce+bce")
_STATIC = ("mixup", "cutmix", "fmix", "saliencymix", "resizemix", "puzzlemix")
# The DESIGN §12 budget. The 10,000 test images are evaluated every 10th epoch and
# in the last 10 (what the table's median reads): an evaluation costs a quarter to a
# third of a training epoch on a CPU, and changes nothing in the training.
_CPU_CIFAR10 = ("--preset=cpu_cifar10", "--eval_every=10")

SUITES = {
    "smoke": Suite(
        rows=_methods("vanilla", *_STATIC, "comixup", "manifoldmix", "automix", "amix"),
        # As small as the binary goes: 1 epoch of 10 batches of 8 16x16 images, width 8,
        # no SavedModel, no TensorBoard mask pictures (the run's masks.png has them), the
        # steps run eagerly (tracing them would cost more than these 10 steps; the tests
        # run each model family's compiled step).
        flags=("--smoke", "--epochs=1", "--run_eagerly"),
        learned_flags=("--mask_summary_every=0",),
        jobs=2,
        description="every method, 1 tiny epoch (CI: about 300 CPU-s, 2 runs at a time)"),
    "cifar10-5k": Suite(
        # After the nine methods (follow-ups: started once every seed of those has, so
        # a suite stopped part-way holds the table first): AMix with the static
        # methods' learning rate to 0 instead of the official floor at half the peak, which
        # is set for the momentum encoder (BUILD_NOTES, "Learning-rate floor"): how much
        # of the online encoder's gap to the momentum one is the floor. Then each learned
        # method with the other momentum schedule than its default (AMix: the short-run rule;
        # AutoMix: as written, 0.999 -> 1). The rule makes the momentum encoder useful
        # early but delays AMix's escape from its flat start and saturates AutoMix's
        # masks (BUILD_NOTES 2026-12-02, 2026-12-03). Last, AMix with the two package
        # options that keep the demo's masks structured (φ's λ adjusting, a 5x variance
        # term; BUILD_NOTES 2026-12-07), to see what they do at this budget before
        # either becomes a default.
        rows=_methods("vanilla", *_STATIC, "automix", "amix") + (
            Row("amix[min_lr=0]", ("--method=amix", "--min_lr=0"), followup=True),
            Row("automix[rule]", ("--method=automix", "--momentum_horizon=0.02"),
                followup=True),
            Row("amix[m=0.999]", ("--method=amix", "--momentum_horizon=0"), followup=True),
            Row("amix[phi-adjust,var=10]", ("--method=amix", "--phi_lam_adjust",
                                            "--mix_block=var_weight=10"), followup=True)),
        flags=_CPU_CIFAR10, needs_data=True,
        description="DESIGN §12 budget: CIFAR-10 JPEG copy, 500 images per class, 100 epochs"),
    "ablation-mb": Suite(
        rows=_methods("automix") + tuple(
            Row(f"automix+{name}={value}", ("--method=automix", f"--mix_block={name}={value}"))
            for name, value in _TABLE8) + _methods("amix"),
        flags=_CPU_CIFAR10, needs_data=True,
        description="paper Table 8: one Mix Block+ switch at a time on AutoMix"),
    "ablation-loss": Suite(
        rows=tuple(Row(f"amix[{loss}]", ("--method=amix", f"--mix_loss={loss}"))
                   for loss in _TABLE7),
        flags=_CPU_CIFAR10, needs_data=True,
        description="paper Table 7 (supervised rows): the Mix Block's loss"),
    "ssl-cifar10": Suite(
        # Issue 11's table. MoCo v2 + MixUp beat MoCo v2 only from some budget on
        # (not at 20 epochs: BUILD_NOTES 2026-11-26); --run_flag=--epochs=N sets it.
        rows=(Row("mocov2", ("--method=mocov2",)),
              Row("mixup", ("--method=mixup",), cost=1.9),
              Row("inter_intra", ("--method=inter_intra",), cost=2.4),
              Row("puzzlemix_c", ("--method=puzzlemix_c",), cost=2.4),
              Row("amix_i", ("--method=amix_i",), cost=3.2),
              Row("amix_c", ("--method=amix_c",), cost=3.2)),
        flags=("--preset=cpu_cifar10", "--epochs=200"), linear_flags=("--preset=cpu_cifar10",),
        needs_data=True, base="mocov2",
        description="paper Tables 4-5 on CIFAR-10 (10,000 images): MoCo v2, + MixUp, "
                    "Inter-Intra (C), PuzzleMix (C), AMix-I, AMix-C; 200 epochs, then "
                    "linear evaluation"),
    "paper-cifar100": Suite(
        rows=_methods("vanilla", *_STATIC, "comixup", "manifoldmix", "automix", "amix"),
        flags=("--preset=cifar100",),
        description="paper Table 2, CIFAR-100 (800 epochs; for GPUs)"),
    "paper-tiny": Suite(
        rows=_methods("vanilla", *_STATIC, "comixup", "manifoldmix", "automix", "amix"),
        flags=("--preset=tiny_imagenet",), needs_data=True,
        description="paper Table 2, Tiny-ImageNet (400 epochs; for GPUs)"),
}

# The binary's own flags (not absl's global FLAGS), as the other binaries.
FLAGS = flags.FlagValues()
flags.DEFINE_enum("suite", "smoke", sorted(SUITES), "Which suite to run: " + "; ".join(
    f"{name}: {suite.description}" for name, suite in SUITES.items()), flag_values=FLAGS)
flags.DEFINE_integer("seeds", 3, "Seeds per row (0, 1, ..., N-1).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_integer("jobs", None, "Runs at a time (default: the suite's, 2 for smoke, "
                     "else 1).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("resume", False, "Continue a suite folder: skip finished runs, resume "
                  "interrupted ones from their backups.", flag_values=FLAGS)
flags.DEFINE_string("suite_workdir", None, "Suite folder (default runs/reproduce/SUITE).",
                    flag_values=FLAGS)
flags.DEFINE_string("data", None, "Data set passed to every run as --dataset (required by "
                    "suites on data that is not embedded, e.g. the CIFAR-10 JPEG copy).",
                    flag_values=FLAGS)
flags.DEFINE_multi_string("run_flag", [], "Extra flag for every run (self-supervised "
                          "suites: its pretraining), e.g. --run_flag=--epochs=50 "
                          "(repeatable).", flag_values=FLAGS)
flags.DEFINE_multi_string("linear_flag", [], "Self-supervised suites: an extra flag for "
                          "every linear evaluation (repeatable).", flag_values=FLAGS)
flags.DEFINE_bool("plots", True, "Write accuracy_vs_time.png and masks.png.", flag_values=FLAGS)
flags.DEFINE_bool("report", False, "Start nothing: write the tables and plots of the runs "
                  "finished so far in `--suite_workdir` (a suite continued over days).",
                  flag_values=FLAGS)


@dataclasses.dataclass
class Run:
    row: Row
    seed: int
    workdir: str
    pretrain: bool = False  # self-supervised: trains into workdir/pretrain first

    @property
    def train_dir(self):
        """Where the run trains (its history, masks and model)."""
        return os.path.join(self.workdir, "pretrain") if self.pretrain else self.workdir

    @property
    def metrics_path(self):
        """The run's last output: the binary's (self-supervised: linear_eval's)."""
        return os.path.join(self.workdir, "metrics.json")

    def finished(self):
        return os.path.exists(self.metrics_path)

    def trained(self):
        return os.path.exists(os.path.join(self.train_dir, "metrics.json"))


def plan(suite, seeds, workdir):
    """Every (row, seed) run of `suite`, in row-major order."""
    return [Run(row, seed, os.path.join(workdir, _slug(row.label), f"seed{seed}"),
                pretrain=suite.selfsup)
            for row in suite.rows for seed in range(seeds)]


def launch_order(runs):
    """The order runs start in: the follow-up rows last; before them, seed by
    seed, so a suite stopped part-way (a CPU run continued over days with
    `--resume`) holds whole tables of its first seeds rather than every seed of
    its first rows; within a seed the AutoMix / AMix runs (the longest, 2-3x
    vanilla) first, so the short runs fill every slot at the end."""
    return sorted(runs, key=lambda run: (run.row.followup, run.seed, not run.row.learnable))


def _slug(label):
    return "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in label)


def command(suite, run, data=None, extra=()):
    """The run's training command (self-supervised suites: its pretraining)."""
    learned = suite.learned_flags if run.row.learnable else ()
    binary = "experiments.train_selfsup" if suite.selfsup else "experiments.train_supervised"
    cmd = [sys.executable, "-m", binary, *suite.flags, *learned, *run.row.flags,
           f"--seed={run.seed}", f"--workdir={run.train_dir}", "--noexport"]
    if data:
        cmd.append(f"--dataset={data}")
    return cmd + list(extra)


def linear_command(suite, run, data=None, extra=()):
    """A self-supervised run's second command: linear evaluation of its encoder."""
    cmd = [sys.executable, "-m", "experiments.linear_eval", *suite.linear_flags,
           f"--encoder={os.path.join(run.train_dir, 'encoder.keras')}", f"--seed={run.seed}",
           f"--workdir={run.workdir}"]
    if data:
        cmd.append(f"--dataset={data}")
    return cmd + list(extra)


def stages(suite, run, data=None, extra=(), linear_extra=()):
    """The commands a run still needs, in order (a finished pretraining is not redone)."""
    if not suite.selfsup:
        return [command(suite, run, data, extra)]
    pretrain = [] if run.trained() else [command(suite, run, data, extra)]
    return pretrain + [linear_command(suite, run, data, linear_extra)]


# ------------------------------------------------------------------ results
def _epochs_done(run):
    path = os.path.join(run.train_dir, "history.csv")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max(sum(1 for line in f if line.strip()) - 1, 0)


def _configured_epochs(run):
    try:
        with open(os.path.join(run.train_dir, "config.json")) as f:
            return int(json.load(f)["epochs"])
    except (OSError, ValueError, KeyError):
        return None


def _fraction(run, epochs):
    """`epochs` as a fraction of the run's configured epochs (0 when unknown)."""
    total = _configured_epochs(run)
    return min(epochs / total, 1.0) if total else 0.0


def median_last(values, n=10):
    """`common.median_last` over the finite values; None when there is none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return common.median_last(values, n) if values else None


def run_result(run):
    """The numbers a finished run contributes (None if it is not finished)."""
    if not run.finished():
        return None
    with open(run.metrics_path) as f:
        metrics = json.load(f)
    history = metrics.get("history", {})
    if run.pretrain:  # the time is the pretraining's, the top-1 the linear evaluation's
        with open(os.path.join(run.train_dir, "metrics.json")) as f:
            metrics = json.load(f)
    seconds = [s for s in metrics.get("seconds_per_epoch", []) if s]
    return dict(
        row=run.row.label, seed=run.seed, workdir=run.workdir,
        top1=median_last(history.get("val_top1", [])),
        top1_momentum=median_last(history.get("val_top1_momentum", [])),
        # The fastest training epoch (the evaluation is not timed): the first one
        # traces/compiles, and a suite continued over days on a shared machine
        # has epochs slowed by other work (a run's epochs do the same work).
        seconds_per_epoch=min(seconds) if seconds else None,
        history=history,
    )


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(suite, results):
    """Per row: n, mean ± std of top-1 (online, momentum) and s/epoch, cost vs the
    suite's base row (vanilla; MoCo v2 for the self-supervised suites)."""
    rows = []
    for row in suite.rows:
        mine = [r for r in results if r and r["row"] == row.label]
        entry = dict(row=row.label, n=len(mine))
        for key in ("top1", "top1_momentum", "seconds_per_epoch"):
            entry[key], entry[key + "_std"] = _mean_std([r[key] for r in mine])
        rows.append(entry)
    base = next((r for r in rows if r["row"] == suite.base and r["seconds_per_epoch"]), None)
    for entry in rows:
        entry["cost_vs_base"] = (entry["seconds_per_epoch"] / base["seconds_per_epoch"]
                                 if base and entry["seconds_per_epoch"] else None)
    return rows


def _pct(mean, std):
    if mean is None:
        return "—"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * mean:.2f}"


def markdown(suite_name, suite, rows, seeds):
    if suite.selfsup:
        what = ("Linear top-1 (%) of the frozen pretrained encoder, median of the last 10 "
                "linear-evaluation epochs, mean ± std over seeds; s / epoch: the fastest "
                "pretraining epoch of each run, mean over seeds.")
        header = (f"| row | seeds done | linear top-1 | pretraining s / epoch | "
                  f"cost vs {suite.base} |")
    else:
        what = ("Median top-1 (%) of the last 10 epochs, mean ± std over seeds; s / epoch: "
                "the fastest training epoch of each run (evaluation not timed), mean over "
                "seeds. Top-1 (momentum): AutoMix's / AMix's momentum encoder, the one their "
                "learning-rate floor is set for (the official config: \"min_lr=5e-2 for the "
                "momentum encoder\"); their online encoder ends at half the peak rate.")
        header = (f"| row | seeds done | top-1 (online) | top-1 (momentum) | s / epoch | "
                  f"cost vs {suite.base} |")
    lines = [f"# Suite `{suite_name}` ({seeds} seed(s) per row)", "", what, "", header,
             "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        sec = "—" if r["seconds_per_epoch"] is None else f"{r['seconds_per_epoch']:.1f}"
        cost = "—" if r["cost_vs_base"] is None else f"{r['cost_vs_base']:.2f}×"
        momentum = ("" if suite.selfsup
                    else f" {_pct(r['top1_momentum'], r['top1_momentum_std'])} |")
        lines.append(f"| {r['row']} | {r['n']} | {_pct(r['top1'], r['top1_std'])} |"
                     f"{momentum} {sec} | {cost} |")
    return "\n".join(lines) + "\n"


def write_results(suite_name, suite, runs, workdir, seeds):
    results = [run_result(run) for run in runs]
    rows = aggregate(suite, results)
    common.write_json(os.path.join(workdir, "results.json"), dict(
        suite=suite_name, seeds=seeds, rows=rows, runs=[r for r in results if r]))
    common.write_text(os.path.join(workdir, "results.md"),
                      markdown(suite_name, suite, rows, seeds))
    return rows


# -------------------------------------------------------------------- plots
def plot_accuracy_vs_time(rows, path, title,
                          ylabel="median top-1 of the last 10 epochs (%)"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["top1"] is not None and r["seconds_per_epoch"] is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in points:
        ax.errorbar(r["seconds_per_epoch"], 100 * r["top1"],
                    xerr=r["seconds_per_epoch_std"] or 0, yerr=100 * (r["top1_std"] or 0),
                    fmt="o", capsize=3)
        ax.annotate(r["row"], (r["seconds_per_epoch"], 100 * r["top1"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("training time per epoch (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return common.save_figure(fig, path)


def _up_to_date(path, source):
    """Whether `path` exists and is at least as new as `source`."""
    return os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(source)


def plot_mask_gallery(runs, path):
    """Fig. 4 for every learnable row (seed 0): the same pairs, masks, mixed images.

    A row's panel is the `masks.png` that the binary draws beside its
    `model.keras` (`visualize_amix`); only a missing or older one is drawn
    here, so TensorFlow loads only then.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for run in runs:
        checkpoint = os.path.join(run.train_dir, "model.keras")
        if not (run.row.learnable and run.seed == 0 and run.finished()
                and os.path.exists(checkpoint)):
            continue
        panel = os.path.join(run.train_dir, "masks.png")
        if not _up_to_date(panel, checkpoint):
            from experiments import visualize_amix

            visualize_amix.visualize(checkpoint, seed=0, out=panel)
        panels.append((run.row.label, plt.imread(panel)))
    if not panels:
        return None
    # Each row as wide as the widest panel, as tall as its aspect ratio asks.
    width = 8.0
    heights = [width * image.shape[0] / image.shape[1] for _, image in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights) + 0.3 * len(panels)),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, (label, image) in zip(axes[:, 0], panels):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(label, fontsize=9)
    return common.save_figure(fig, path)


# ------------------------------------------------------------------- runner
def _clock(seconds):
    """`seconds` as m:ss, or h:mm:ss from an hour on."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# The time left is extrapolated from the work of the last half hour: a suite
# continued for days on a shared machine (paused, or starved by other work
# for a while) would otherwise carry its slow hours into every estimate.
RATE_WINDOW_SECONDS = 1800.0
# The suite polls its runs about every second: a longer gap between two polls
# than this means the suite itself did not run (stopped with SIGSTOP, the
# machine suspended), nor did its runs, and the estimate leaves the gap out.
STOPPED_GAP_SECONDS = 60.0


def stopped_seconds(previous, now, poll_seconds):
    """The part of the time between two polls (at `previous`, `now`) in which
    the suite was stopped: none for a gap up to `poll_seconds` +
    `STOPPED_GAP_SECONDS`, else all of it but one poll interval."""
    gap = now - previous
    return gap - poll_seconds if gap > poll_seconds + STOPPED_GAP_SECONDS else 0.0


def progress(runs, running, pending, ended, elapsed, window=None, clock=None):
    """The progress line and its state (the line less the clock).

    Runs are numbered by their place in `runs` (the launch order); `running`
    and `ended` (the runs this invocation ended, finished or failed) hold
    `(run, process, epochs done at its start)`; `pending` the runs still to
    start. The time left extrapolates the work done here (the epochs each
    run trained in this invocation) to the work left, each run weighted by
    its row's `weight` (the learned runs, which start first, take 2.7x).
    `window` (a list the caller keeps between calls; None: since the start)
    holds `(clock, work done)` samples: the rate is the one since its oldest
    sample of the last `RATE_WINDOW_SECONDS`, and this call appends its own.
    `clock` is the time the suite ran (`elapsed` less the spells it was
    stopped; default `elapsed`): the rate's time, while the line shows `elapsed`.
    """
    clock = elapsed if clock is None else clock
    number = {run.workdir: i for i, run in enumerate(runs, 1)}
    done = sum(run.finished() for run in runs)
    parts, progressed = [], 0.0
    left = sum(run.row.weight for run in pending)
    for run, _proc, first_epochs in ended:  # finished or failed: no more work here
        progressed += (1.0 - _fraction(run, first_epochs)) * run.row.weight
    for run, _proc, first_epochs in running:
        epochs = _epochs_done(run)
        parts.append(f"run {number[run.workdir]}/{len(runs)} {run.row.label} seed {run.seed}: "
                     f"epoch {epochs}/{_configured_epochs(run) or '?'}")
        fraction = _fraction(run, epochs)
        progressed += max(fraction - _fraction(run, first_epochs), 0.0) * run.row.weight
        left += (1.0 - fraction) * run.row.weight
    since, work = 0.0, 0.0
    if window is not None:
        window.append((clock, progressed))
        while len(window) > 1 and window[1][0] <= clock - RATE_WINDOW_SECONDS:
            del window[0]  # keep one sample at or before the window's start
        since, work = window[0]
    times = f"{_clock(elapsed)} elapsed"
    if progressed - work > 0 and clock > since:
        times += f", about {_clock((clock - since) * left / (progressed - work))} left"
    state = f"[{done}/{len(runs)} done] " + "; ".join(parts)
    return state, f"[{done}/{len(runs)} done, {times}] " + "; ".join(parts)


def run_suite(suite_name, seeds=1, jobs=None, resume=False, workdir=None, data=None, extra=(),
              plots=True, poll_seconds=1.0, heartbeat_seconds=60.0, out=sys.stdout,
              linear_extra=(), report=False):
    """Runs a suite (`jobs` runs at a time; None: the suite's default); returns
    (rows, failed runs). `report=True` starts nothing: the tables and plots of
    the runs already finished in `workdir`."""
    if suite_name not in SUITES:
        raise ValueError(f"`suite` must be one of {sorted(SUITES)}; received {suite_name!r}.")
    suite = SUITES[suite_name]
    jobs = suite.jobs if jobs is None else jobs
    for name, value in (("seeds", seeds), ("jobs", jobs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1; received {name}={value!r}.")
    workdir = workdir or os.path.join("runs", "reproduce", suite_name)
    if report:
        if not os.path.isdir(workdir):
            raise ValueError("With `report`, `suite_workdir` must be the folder of a suite "
                             f"begun earlier; received {workdir!r}, not a folder.")
    elif suite.needs_data and not data:
        raise ValueError(f"Suite {suite_name!r} runs on data that is not embedded: pass "
                         "`--data` (e.g. --data=/tmp/data/cifar10-jpg).")
    runs = plan(suite, seeds, workdir)
    if not (resume or report) and any(os.path.exists(run.workdir) for run in runs):
        raise ValueError(f"{workdir!r} already holds runs of this suite: pass `--resume` to "
                         "continue it, or choose another `--suite_workdir`.")
    os.makedirs(workdir, exist_ok=True)
    order = launch_order(runs)  # results keep the table order
    pending = [] if report else [run for run in order if not run.finished()]
    running, failed, ended = [], [], []
    window = []  # (clock, work done) samples of the time-left estimate
    t0 = time.time()
    stopped, last_poll = 0.0, t0  # seconds the suite was stopped; the last poll's time
    last_state, last_print = None, t0
    todo = {}  # run workdir -> the commands it still has to run, the current one first

    def launch(run):
        os.makedirs(run.workdir, exist_ok=True)
        with open(os.path.join(run.workdir, "log.txt"), "ab") as log:
            return subprocess.Popen(todo[run.workdir].pop(0), stdout=log,
                                    stderr=subprocess.STDOUT)

    while pending or running:
        while pending and len(running) < jobs:
            run = pending.pop(0)
            todo[run.workdir] = stages(suite, run, data, extra, linear_extra)
            running.append((run, launch(run), _epochs_done(run)))
        now = time.time()
        stopped += stopped_seconds(last_poll, now, poll_seconds)
        last_poll = now
        state, line = progress(order, running, pending, ended, now - t0, window,
                               clock=now - t0 - stopped)
        if state != last_state or now - last_print >= heartbeat_seconds:
            print(line, file=out, flush=True)
            last_state, last_print = state, now
        time.sleep(poll_seconds)
        still = []
        for entry in running:
            run, proc, first_epochs = entry
            if proc.poll() is None:
                still.append(entry)
                continue
            if proc.returncode == 0 and todo[run.workdir]:  # its next stage, same slot
                still.append((run, launch(run), first_epochs))
                continue
            ended.append(entry)
            if proc.returncode != 0 or not run.finished():
                failed.append(run)
                print(f"FAILED (exit {proc.returncode}): {run.row.label} seed {run.seed}; "
                      f"see {os.path.join(run.workdir, 'log.txt')}", file=out, flush=True)
            else:
                write_results(suite_name, suite, runs, workdir, seeds)
        running = still
    done = sum(run.finished() for run in runs)
    print(f"[{done}/{len(runs)} done] {len(ended)} run(s) ended here ({len(failed)} failed) in "
          f"{_clock(time.time() - t0)}", file=out, flush=True)
    rows = write_results(suite_name, suite, runs, workdir, seeds)
    if plots:
        t_plots = time.time()
        labels = ((f"{suite_name}: linear top-1 against pretraining time",
                   "linear top-1, median of the last 10 epochs (%)") if suite.selfsup
                  else (f"{suite_name}: top-1 against training time",))
        plot_accuracy_vs_time(rows, os.path.join(workdir, "accuracy_vs_time.png"), *labels)
        plot_mask_gallery(runs, os.path.join(workdir, "masks.png"))
        print(f"plots written in {_clock(time.time() - t_plots)}", file=out, flush=True)
    return rows, failed


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        rows, failed = run_suite(FLAGS.suite, FLAGS.seeds, FLAGS.jobs, FLAGS.resume,
                                 FLAGS.suite_workdir, FLAGS.data, FLAGS.run_flag, FLAGS.plots,
                                 linear_extra=FLAGS.linear_flag, report=FLAGS.report)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    workdir = FLAGS.suite_workdir or os.path.join("runs", "reproduce", FLAGS.suite)
    with open(os.path.join(workdir, "results.md")) as f:
        print(f.read())
    if failed:
        print(f"{len(failed)} run(s) failed; rerun with --resume to retry them.")
        return 1
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=common.flags_parser(FLAGS, __doc__))
