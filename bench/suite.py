"""Every benchmark in one run, one table: figure | measured | target | ratio to target.

    .venv/bin/python bench/suite.py [--quick] [--verbose]      (make bench)

Runs the scripts beside this one, each in its own process (each also runs
alone: see its docstring), reads the figures each writes with --json, and
prints the machine, then the table. A ratio is measured / target: under 1 meets
an "under" target, over 1 an "over" one. --quick shortens everything (a smoke
test of the suite, not figures to quote). The machine is shared and noisy:
quote ranges over repeated runs. No asserts (DESIGN.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent

TINY = ["--vocab", "512", "--embd", "64", "--seq-len", "32"]  # a few-ms step: fixed costs show
# script -> (default arguments, --quick arguments)
RUNS = {
    "probe_overhead": (["--rounds", "20", "--block", "10"], ["--rounds", "3", "--block", "4"]),
    "probe_overhead_d4": (["--depth", "4", "--vocab", "65536", "--rounds", "6", "--block", "3"],
                          ["--depth", "4", "--vocab", "65536", "--rounds", "1", "--block", "2"]),
    "calibration_cost": (["--steps", "800"], ["--steps", "300"]),
    "inject_cost": (["--rounds", "16", "--block", "8"], ["--rounds", "2", "--block", "3"]),
    "inject_cost_tiny": (["--rounds", "30", "--block", "20", *TINY], ["--rounds", "2",
                                                                    "--block", "5", *TINY]),
    "probe_cost": (["--samples", "300"], ["--samples", "30"]),
    "ingest": (["--records", "400000", "--seconds", "2"], ["--records", "40000",
                                                           "--seconds", "0.5"]),
    "tui_cost": (["--seconds", "30"], ["--seconds", "6"]),
    "tui_paced": (["--paced", "--seconds", "20"],
                  ["--paced", "10", "--sizes", "80x24", "--seconds", "5"]),
    "traceml_cost": (["--rounds", "20", "--block", "10"], ["--rounds", "3", "--block", "4"]),
    "monitor_memory": (["--steps", "500000"], ["--steps", "20000"]),
    "frozen_monitor": (["--freeze", "30", "--window", "15"], ["--freeze", "4", "--window", "3"]),
    "attach_first_screen": (["--steps", "5000", "--runs", "5"], ["--steps", "2000", "--runs", "2"]),
    "attach_long": (["--steps", "500000", "--runs", "3", "--no-log"],
                    ["--steps", "20000", "--runs", "1", "--no-log"]),
    "forecast": (["--steps", "24"], ["--steps", "8", "--vocab", "8192", "--seq-len", "128"]),
}
SCRIPT = {"attach_long": "attach_first_screen", "probe_overhead_d4": "probe_overhead",
          "inject_cost_tiny": "inject_cost", "tui_paced": "tui_cost"}


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kb / 2**20:.0f} GiB"
    except (OSError, IndexError, ValueError):
        memory = "?"
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "not installed"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"machine: {cpu}, {os.cpu_count()} cores, {memory} memory; Python "
            f"{platform.python_version()}, torch {torch}; {platform.system()} "
            f"{platform.release()}; load average at start {load}")


def run_script(name: str, quick: bool, verbose: bool) -> dict | None:
    args = RUNS[name][1 if quick else 0]
    with tempfile.TemporaryDirectory(prefix="scalemon-suite-") as tmp:
        out = Path(tmp) / "figures.json"
        script = HERE / f"{SCRIPT.get(name, name)}.py"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script), *args, "--json", str(out)],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if verbose or proc.returncode or not out.exists():
            print(f"--- {script.name} {' '.join(args)} ({seconds:.0f} s)\n{proc.stdout}"
                  f"{proc.stderr[-2000:] if proc.returncode else ''}", flush=True)
        if proc.returncode or not out.exists():
            return None
        return json.loads(out.read_text())


def help_startup(runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "scalemon", "--help"], capture_output=True,
                       check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, figure: str, measured: str, target: str = "", ratio: float | None = None):
        self.rows.append((figure, measured, target or "-",
                          "-" if ratio is None else f"{ratio:.2f}"))

    def missing(self, figure: str, why: str = "did not run (see its output above)") -> None:
        self.rows.append((figure, why, "-", "-"))

    def print(self) -> None:
        head = ("figure", "measured", "target", "ratio to target")
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for row in self.rows:
            print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--verbose", action="store_true", help="print each script's output")
    options = parser.parse_args()
    print(machine(), flush=True)
    started = time.perf_counter()
    results = {}
    for name in RUNS:
        results[name] = run_script(name, options.quick, options.verbose)
    startup = help_startup(3 if options.quick else 10)

    table = Table()
    def worse(r: dict, name: str) -> float:  # of the two DDP settings
        return max(value for key, value in r["ratios"].items() if key.endswith(": " + name))

    for name, shape, target in (("probe_overhead_d4", "the trainer's d4 shape", 0.002),
                                ("probe_overhead", "a tiny d2, magnifying fixed costs", 0.005)):
        r = results[name]
        if not r:
            table.missing(f"step probe cost per step, {shape}")
            continue
        ratio = worse(r, "probe/builtin")
        table.add(f"step probe cost per step, {shape} ({r['step_ms']:.0f} ms steps, paired)",
                  f"{ratio:.4f}x the step without it ({(ratio - 1):+.2%})", f"< {target:.1%}",
                  (ratio - 1) / target)
    r = results["traceml_cost"]
    if not r:
        table.missing("TraceML trace_step cost per step, same d2 DDP loop")
    elif not r["installed"]:
        table.missing("TraceML trace_step cost per step",
                      "traceml-ai not installed (pip install -e '.[bench]')")
    else:
        t, p = r["ratios"]["traceml/bare"], r["ratios"]["probe/bare"]
        table.add(f"peer: TraceML {r['traceml_version']} trace_step cost per step, the same d2 "
                  f"DDP loop under `traceml run` ({r['step_ms']['bare']:.0f} ms steps, "
                  f"interleaved; scalemon's probe in the same run {p:.4f}x, {p - 1:+.2%}; "
                  f"TraceML's threads {r['traceml_threads_share']:.2%} + aggregator "
                  f"{(r['traceml_aggregator_share'] or 0):.1%} of a core)",
                  f"{t:.4f}x the step without it ({t - 1:+.2%})")
    r = results["probe_overhead"]
    if r:
        # The rest is any Python comm hook's, against DDP's built-in C++ allreduce.
        own = worse(r, "probe/hook")
        table.add("  of which the probe itself, d2 (vs the same Python comm hook untimed)",
                  f"{own:.4f}x ({(own - 1):+.2%})", "< 1%", (own - 1) / 0.01)
        table.add("step probe's own bookkeeping per step, timed alone",
                  f"{r['bookkeeping_us']:.0f} µs = {r['bookkeeping_us'] / 1000 / r['step_ms']:.2%}"
                  " of a d2 step", "< 1%", r["bookkeeping_us"] / 1000 / r["step_ms"] / 0.01)
    for name, shape in (("inject_cost", "nanochat d4's size"),
                        ("inject_cost_tiny", "a tiny model, magnifying fixed costs")):
        r = results[name]
        if not r:
            table.missing(f"injected probe cost per step, {shape}")
            continue
        ratio = r["inject_cost_ratio"]
        extra = (r["inject_cost_ratio"] - 1) * r["bare_step_s"] * 1e6
        table.add(f"injected probe cost per step, no probe code, {shape} (nanochat-shaped "
                  f"loop, {r['bare_step_s'] * 1000:.1f} ms steps, interleaved; rounds "
                  f"{r['inject_cost_min']:.3f}-{r['inject_cost_max']:.3f})",
                  f"{ratio:.4f}x the step without it ({(ratio - 1):+.2%}, {extra:+.0f} µs)",
                  *(("< 1%", (ratio - 1) / 0.01) if name == "inject_cost" else ()))
    r = results["calibration_cost"]
    if r:
        table.add(f"no_sync calibration samples' share of training time (d{r['depth']}, "
                  f"{r['step_ms']:.0f} ms steps, {r['samples']} samples in {r['steps']} steps)",
                  f"{r['share']:.2%}", "< 1%", r["share"] / 0.01)
    else:
        table.missing("no_sync calibration's share of training time")
    r = results["probe_cost"]
    if r:
        sample = r["host + network"]
        table.add("one system-probe sample (host + network, 10-process tree)",
                  f"{sample['median_us']:.0f} µs", "< 2 ms",
                  sample["median_us"] / sample["budget_us"])
    else:
        table.missing("one system-probe sample")
    r = results["ingest"]
    if r:
        table.add(f"records/s one monitor ingests from files, validated ("
                  f"{r['files']['records']:,}, {r['files']['records'] - r['files']['folded']} "
                  f"lost)", f"{r['files']['rate']:,.0f}/s", "> 200,000/s",
                  r["files"]["rate"] / 200_000)
        d = r["decode"]
        table.add("  decoding alone: msgspec against the reference (json and the hand-written "
                  f"rules), {d['records'] - d['decoded'] - d['bad']} lost",
                  f"{d['fast_us']:.2f} vs {d['reference_us']:.2f} µs a record "
                  f"({d['reference_us'] / d['fast_us']:.1f}x)")
        table.add(f"records/s one monitor ingests from its socket, flat out "
                  f"({r['flat']['sent']:,} sent, {r['flat']['lost']} lost)",
                  f"{r['flat']['rate']:,.0f}/s", "> 50,000/s", r["flat"]["rate"] / 50_000)
        table.add("highest paced datagram rate with none dropped (non-blocking sends, "
                  "as the probe)", f"{r['paced_max']:,}/s" if r["paced_max"] else
                  "under 10,000/s")
    else:
        table.missing("records/s one monitor ingests")
    r = results["tui_cost"]
    if r:
        table.add(f"monitor CPU, the screen watching a two-rank run ({r['steps_per_s']:.0f} "
                  f"steps/s, {r['seconds']:.0f} s)", f"{r['cpu_share']:.1%} of one core", "< 3%",
                  r["cpu_share"] / 0.03)
        if r.get("floor_share"):
            ratio = r["cpu_share"] / r["floor_share"]
            table.add(f"  against a bare Textual app (six text panels and a sparkline redrawn "
                      f"once a second, same {r['size']} pane, same run): "
                      f"{r['floor_share']:.1%} of one core", f"{ratio:.2f}x the floor",
                      "< 1.5x", ratio / 1.5)
        table.add("step end to screen, 95th percentile (same run)",
                  f"{r['p95_s'] * 1000:.0f} ms", "< 250 ms", r["p95_s"] / 0.25)
    else:
        table.missing("monitor CPU share (needs tmux)")
    r = results["tui_paced"]
    for row in r["paced"] if r else []:
        table.add(f"monitor CPU against the bare Textual floor in the same pane, synthetic "
                  f"two-rank run, {row['size']}, {row['steps_per_s']:g} steps/s (monitor "
                  f"{row['cpu_share']:.2%}, floor {row['floor_share']:.2%} of one core)",
                  f"{row['ratio']:.2f}x the floor", "< 1.5x", row["ratio"] / 1.5)
    if not r:
        table.missing("monitor CPU against the floor at set step rates (needs tmux)")
    r = results["monitor_memory"]
    if r:
        steps = f"{r['records']:,} steps ({r['ranks']} ranks)"
        table.add(f"monitor memory after {steps}: scalemon replay", f"{r['replay_mb']:.0f} MB RSS",
                  "< 150 MB", r["replay_mb"] / 150)
        table.add(f"monitor memory after {steps}: live collector (attach, screen)",
                  f"{r['live_mb']:.0f} MB RSS", "< 150 MB", r["live_mb"] / 150)
        table.add(f"folding {steps} (scalemon replay)", f"{r['replay_s']:.1f} s, "
                  f"{r['records'] / r['replay_s']:,.0f} records/s")
    else:
        table.missing("monitor memory")
    r = results["frozen_monitor"]
    if r:
        table.add(f"rank 0 step time, monitor frozen {r['freeze_s']:.0f} s vs running "
                  f"({r['frozen_ms']:.0f} vs {r['running_ms']:.0f} ms)", f"{r['ratio']:.3f}x",
                  "within 5%", abs(r["ratio"] - 1) / 0.05)
        missing = sum(r["missing"].values())
        table.add(f"steps missing from the rank files after the freeze "
                  f"({r['drops']} datagrams dropped)", f"{missing} of "
                  f"{sum(r['steps'].values()):,}", "0")
    else:
        table.missing("frozen-monitor step time")
    r = results["forecast"]
    for key in ("depth", "accumulation"):
        if not r:
            table.missing(f"plan --from-run step-time forecast ({key})")
            continue
        f = r[key]
        table.add(f"plan --from-run: {f['label']}, two gloo ranks: measured / predicted step "
                  f"({f['measured_s'] * 1000:.0f} vs {f['predicted_s'] * 1000:.0f} ms; 6N "
                  f"{f['ratio_6n']:.2f})", f"{f['ratio']:.2f}", "within 25%",
                  abs(f["ratio"] - 1) / 0.25)
    table.add("scalemon --help start-up, median", f"{startup * 1000:.0f} ms")
    for name, label in (("attach_first_screen", "attach first status line"),
                        ("attach_long", "attach first status line")):
        r = results[name]
        if r:
            table.add(f"{label}, {r['steps']:,} steps x 2 ranks of history",
                      f"{r['run_s']:.2f} s", "< 1.5 s", r["run_s"] / 1.5)
            if "log_s" in r:
                table.add(f"attach a plain process's log, {r['steps']:,} steps",
                          f"{r['log_s']:.2f} s", "< 1.5 s", r["log_s"] / 1.5)
        else:
            table.missing(label)
    print(f"\nbench/suite.py{' --quick' if options.quick else ''}: "
          f"{time.perf_counter() - started:.0f} s")
    table.print()


if __name__ == "__main__":
    main()
