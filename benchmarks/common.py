"""Helpers shared by the benchmark scripts: timing, machine description, output."""

import json
import os
import platform
import statistics
import subprocess
import time


def machine():
    """A short description of where the benchmark ran."""
    import keras

    info = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        info["gpu"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    return info


def time_calls(fn, repeats, warmup=2):
    """Median wall time (s) of `fn()` over `repeats` calls after `warmup` calls.

    `fn` must block until its work is done (e.g. convert its result to numpy).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def time_interleaved(steps, rounds, repeats, warmup=2):
    """Times several step functions side by side in interleaved rounds.

    `steps` maps a name to a zero-argument function running one blocking
    step. Each is warmed up, then each round times `repeats` calls of every
    function in turn, so that machine load drifts hit all of them alike.
    Returns {name: [seconds per call, one value per round]}.
    """
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)
    return times


def ratio_rows(times, batch_size, reference):
    """Table rows: median step time, images/s and ratio to `reference`."""
    base = statistics.median(times[reference])
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append(dict(method=name, step_ms=1000 * median, img_per_s=batch_size / median,
                         ratio_to_first=median / base))
    return rows


def print_table(rows, columns):
    widths = [max(len(str(c)), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_json(path, payload):
    # Not experiments.common.write_json: that module imports the TF data stack,
    # and the benchmarks must run where only JAX is installed (GPU hosts).
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)
    print(f"wrote {path}")
