r"""Table of a self-supervised comparison (benchmarks/compare_selfsup.sh).

Reads RUNS/METHOD/metrics.json (pretraining) and RUNS/METHOD/linear/metrics.json
(linear evaluation) of each method, prints a table and writes it as JSON.

    python -m benchmarks.summarize_selfsup --runs=runs/ssl_cifar10 \
        --methods=mocov2,mixup,imix,unmix,mochi --out=benchmarks/results/ssl_cifar10_cpu.json
"""

import json
import os

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("runs", "runs/ssl_cifar10", "Folder with one sub-folder per method.")
flags.DEFINE_list("methods", ["mocov2", "mixup", "imix", "unmix", "mochi"], "Methods, in order.")
flags.DEFINE_string("out", "benchmarks/results/ssl_cifar10_cpu.json", "JSON output.")


def _read(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def summarize(runs, methods):
    rows = []
    for method in methods:
        pre = _read(os.path.join(runs, method, "metrics.json"))
        lin = _read(os.path.join(runs, method, "linear", "metrics.json"))
        if lin is None:
            rows.append(dict(method=method, status="missing"))
            continue
        row = dict(method=method, status="ok", epochs=0, final_loss=None,
                   seconds_per_epoch=None)  # without pretraining (the random reference)
        if pre is not None:
            seconds = pre.get("seconds_per_epoch") or []
            row.update(epochs=len(pre["history"]["loss"]), final_loss=pre["history"]["loss"][-1],
                       seconds_per_epoch=(sorted(seconds)[len(seconds) // 2] if seconds
                                          else None))
        rows.append(dict(row, linear_top1=lin["top1"],
                         linear_median_last10=lin["median_last10_top1"]))
    return rows


def main(argv):
    del argv
    rows = summarize(FLAGS.runs, FLAGS.methods)
    common.print_table(rows, ["method", "status", "epochs", "seconds_per_epoch", "final_loss",
                              "linear_top1", "linear_median_last10"])
    common.write_json(FLAGS.out, dict(machine=common.machine(), runs=FLAGS.runs, rows=rows))


if __name__ == "__main__":
    app.run(main)
