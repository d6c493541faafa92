"""The live screen's own cost while it watches a two-rank gloo run, inside a real terminal (tmux).

    .venv/bin/python bench/tui_cost.py [--seconds 30] [--depth 2 --vocab 8192]

Starts a training run (two gloo ranks on this machine), then the screen in a
tmux pane at 100x30 watching it through the real source (live socket, run
dir files, system probes). Prints, as ratios to the targets of issue 5:

- the monitor's CPU time over the watch (every thread: the feed's polls and
  probes, Textual's rendering and its writes to the terminal) as a share of
  one core, against 3%;
- for every step of rank 0 in that time, the delay from its end (the wall
  time in its record) until a frame showing it, or a later step, has been
  rendered and handed to the terminal; median and 95th percentile, against
  250 ms. (Steps come faster than the 5 views a second: a step the screen
  skips counts until the next one shows.)

No asserts (DESIGN.md: benchmarks are ratios measured in one run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CPU_TARGET = 0.03
DELAY_TARGET_S = 0.250


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live Python thread, by name (Linux: /proc/self/task)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
        out[thread.name] = (int(utime) + int(stime)) / tick
    return out


def monitor(run_path: str, out: str, seconds: float) -> None:
    """The child: the screen on a real terminal, noting when each view reaches it."""
    from scalemon.io.rundir import RunDir
    from scalemon.sources.rundir import RunDirSource
    from scalemon.tui.app import ScalemonApp
    from scalemon.tui.feed import ViewUpdated

    class TimedApp(ScalemonApp):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, **kw)
            self.frames: list[tuple[float, int]] = []  # (wall time on screen, step shown)
            self.start: tuple[float, float] | None = None
            self.threads: dict[str, float] = {}

        def on_view_updated(self, message: ViewUpdated) -> None:
            # Runs beside ScalemonApp's own handler (Textual calls each class's in the MRO).
            if self.start is None:  # measure the steady state, not start-up
                self.start = (time.monotonic(), cpu_seconds())
                self.threads = thread_cpu()
                self.set_timer(seconds, self.finish)
            self.call_after_refresh(self.frame_out, message.view.summary.step)

        def frame_out(self, step: int) -> None:
            self.frames.append((time.time(), step))

        def finish(self) -> None:
            wall, cpu = time.monotonic() - self.start[0], cpu_seconds() - self.start[1]
            threads = {name: t - self.threads.get(name, 0.0) for name, t in thread_cpu().items()}
            Path(out).write_text(json.dumps({
                "wall_s": wall, "cpu_s": cpu, "threads": threads, "frames": self.frames,
                "views": self.feed.views_posted if self.feed else 0}))
            self.exit("quit")

    with RunDirSource(RunDir(Path(run_path)), system=True) as source:
        TimedApp(source, price=2.0, stop_run=lambda: False).run()


def start_run(home: Path, depth: int, vocab: int):
    os.environ["SCALEMON_HOME"] = str(home)
    from scalemon.run import launch

    run = launch.create_run(launch.RunOptions(name="bench", depth=depth, vocab=vocab,
                                              backend="gloo", steps=100_000,
                                              checkpoint_every=0))
    launch.start_supervisor(run)
    return run


def stop_run(run) -> None:
    from scalemon.run import launch

    launch.stop_and_wait(run)


def steps_done(run) -> int:
    path = run.rank_file(0)
    return path.read_bytes().count(b'"kind":"step"') if path.exists() else 0


def step_delays(run, frames: list[tuple[float, int]]) -> list[float]:
    """For each step of rank 0 ended while the screen watched: the time until a frame
    showed it or a later step (a step the screen skipped counts until the next one shows)."""
    from scalemon.core import codec, records

    ends = [(r.step, r.t) for r in map(codec.decode, run.rank_file(0).read_bytes().splitlines())
            if isinstance(r, records.StepRecord)]
    delays = []
    for step, end in ends:
        # The first 3 s: the screen's start-up, and the ranks finding its socket (they look
        # for monitors every 2 s; until then steps reach it through the files, each second).
        if end < frames[0][0] + 3.0:
            continue
        shown = next((t for t, s in frames if s >= step and t >= end), None)
        if shown is None:
            break  # ended after the last frame
        delays.append(shown - end)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--monitor", nargs=2, metavar=("RUN_DIR", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    if args.monitor:
        monitor(*args.monitor, args.seconds)
        return
    if shutil.which("tmux") is None:
        print("bench/tui_cost.py: skipped, it needs tmux (apt-get install tmux)")
        return
    with tempfile.TemporaryDirectory(prefix="scalemon-tui-bench-") as tmp:
        home, out = Path(tmp) / "home", Path(tmp) / "out.json"
        tmux = ["tmux", "-L", f"scalemon-bench-{os.getpid()}"]
        run = start_run(home, args.depth, args.vocab)
        try:
            while steps_done(run) < 10:  # past start-up and warm-up
                time.sleep(0.5)
            steps_before, t_before = steps_done(run), time.monotonic()
            child = [sys.executable, str(Path(__file__).resolve()), "--seconds",
                     str(args.seconds), "--monitor", str(run.path), str(out)]
            env = f"env TERM=xterm-256color SCALEMON_HOME={home} "
            subprocess.run(tmux + ["new-session", "-d", "-s", "bench", "-x", "100", "-y", "30",
                                   env + " ".join(child)], check=True)
            deadline = time.monotonic() + args.seconds + 60
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.5)
            steps_per_s = (steps_done(run) - steps_before) / (time.monotonic() - t_before)
        finally:
            stop_run(run)
            subprocess.run(tmux + ["kill-server"], capture_output=True)
        if not out.exists():
            sys.exit("the monitor wrote no result (see the tmux pane's output)")
        result = json.loads(out.read_text())
        delays = sorted(step_delays(run, result["frames"]))
    share = result["cpu_s"] / result["wall_s"]
    p50 = statistics.median(delays)
    p95 = delays[round(0.95 * (len(delays) - 1))]
    print(f"screen watching a d{args.depth} vocab {args.vocab:,} run, two gloo ranks, "
          f"{steps_per_s:.1f} steps/s, {result['wall_s']:.0f} s in a 100x30 tmux pane, "
          f"{result['views'] / result['wall_s']:.1f} views/s")
    print(f"monitor CPU: {share:.1%} of one core ({share / CPU_TARGET:.2f}x the "
          f"{CPU_TARGET:.0%} target)")
    print("  by thread: " + ", ".join(f"{name} {t / result['wall_s']:.1%}"
                                      for name, t in sorted(result["threads"].items())))
    print(f"step end to screen: median {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
          f"({p95 / DELAY_TARGET_S:.2f}x the {DELAY_TARGET_S * 1000:.0f} ms target), "
          f"max {delays[-1] * 1000:.0f} ms over {len(delays)} steps")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cpu_share": share, "p50_s": p50, "p95_s": p95, "steps_per_s": steps_per_s,
            "seconds": result["wall_s"], "views_per_s": result["views"] / result["wall_s"]}))


if __name__ == "__main__":
    main()
