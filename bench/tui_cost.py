"""The live screen's own cost while it watches a two-rank gloo run, inside a real terminal (tmux).

    .venv/bin/python bench/tui_cost.py [--seconds 30] [--depth 2 --vocab 8192]

Starts a training run (two gloo ranks on this machine), then the screen in a
tmux pane (--size, 100x30) watching it through the real source (live socket, run
dir files, system probes). Then, in the same pane, the floor any Textual monitor
pays: a bare Textual app with six text panels and a sparkline, redrawn once a
second, for as long, while the ranks train on. Prints, as ratios to the targets of issue 5
and beside that floor:

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
FLOOR_TARGET = 1.5  # the monitor against a bare Textual app in the same pane
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


def floor(out: str, seconds: float) -> None:
    """The child for the floor: a bare Textual app with six text panels and a sparkline,
    each redrawn with new text once a second, measured as the monitor is."""
    import random

    from textual.app import App, ComposeResult
    from textual.containers import Grid
    from textual.widgets import Sparkline, Static

    class Floor(App[None]):
        CSS = "Grid { grid-size: 2 4; } Static { border-top: solid $foreground 30%; }"

        def compose(self) -> ComposeResult:
            with Grid():
                yield from (Static(id=f"p{i}") for i in range(6))
                yield Sparkline([0.0], id="spark")

        def on_mount(self) -> None:
            self.history: list[float] = []
            self.start = (time.monotonic(), cpu_seconds())
            self.threads = thread_cpu()
            self.set_interval(1.0, self.redraw)
            self.set_timer(seconds, self.finish)

        def redraw(self) -> None:
            self.history = (self.history + [random.random()])[-60:]
            for i in range(6):
                self.query_one(f"#p{i}", Static).update(
                    "\n".join(f"panel {i} line {n}: {random.random():.6f}" for n in range(6)))
            self.query_one("#spark", Sparkline).data = self.history

        def finish(self) -> None:
            wall, cpu = time.monotonic() - self.start[0], cpu_seconds() - self.start[1]
            threads = {name: t - self.threads.get(name, 0.0) for name, t in thread_cpu().items()}
            Path(out).write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "threads": threads}))
            self.exit()

    Floor().run()


def in_pane(tmux: list[str], size: str, env: str, child: list[str], out: Path,
            seconds: float) -> dict | None:
    """Run `child` in a fresh tmux pane of `size` until it writes `out`; its figures."""
    width, height = size.split("x")
    for attempt in range(5):  # the last pane's server may still be exiting
        started = subprocess.run(tmux + ["new-session", "-d", "-s", "bench", "-x", width,
                                         "-y", height, env + " ".join(child)],
                                 capture_output=True, text=True)
        if started.returncode == 0:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        sys.exit(f"tmux would not start a pane: {started.stderr.strip()}")
    deadline = time.monotonic() + seconds + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    subprocess.run(tmux + ["kill-server"], capture_output=True)
    return json.loads(out.read_text()) if out.exists() else None


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


def watch_and_floor(tmux: list[str], size: str, home: Path, run_path: Path, out_dir: Path,
                    seconds: float) -> tuple[dict | None, dict | None]:
    """The monitor watching `run_path` in a `size` pane, then the bare floor in the same pane
    size for as long (the run going on beside both); their figures."""
    here = str(Path(__file__).resolve())
    out, floor_out = out_dir / f"monitor-{size}.json", out_dir / f"floor-{size}.json"
    for path in (out, floor_out):
        path.unlink(missing_ok=True)
    child = [sys.executable, here, "--seconds", str(seconds), "--monitor", str(run_path),
             str(out)]
    result = in_pane(tmux, size, f"env TERM=xterm-256color SCALEMON_HOME={home} ", child, out,
                     seconds)
    floor_child = [sys.executable, here, "--seconds", str(seconds), "--floor", str(floor_out)]
    bare = in_pane(tmux, size, "env TERM=xterm-256color ", floor_child, floor_out, seconds)
    return result, bare


def by_thread(result: dict) -> dict[str, float]:
    """Each thread's CPU as a share of one core over the measured time."""
    return {name: t / result["wall_s"] for name, t in sorted(result["threads"].items())}


def shares_text(threads: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2%}" for name, share in threads.items())


def paced(tmux: list[str], tmp: Path, sizes: list[str], rates: list[float], seconds: float
          ) -> list[dict]:
    """For each pane size and step rate: a synthetic two-rank run at that rate
    (bench/paced_run.py), the monitor watching it, and the floor beside it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from runs import write_config

    from scalemon.io.rundir import RunDir

    home, rows = tmp / "home", []
    for size in sizes:
        for rate in rates:
            run = RunDir.create(home / "runs" / f"paced-{size}-{rate:g}")
            writer = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("paced_run.py")), str(run.path),
                 str(rate), str(2 * seconds + 60)])
            write_config(run, round(rate * (2 * seconds + 60)),
                         pids={"0": writer.pid, "1": writer.pid})
            try:
                result, bare = watch_and_floor(tmux, size, home, run.path, tmp, seconds)
            finally:
                writer.kill()
                writer.wait()
            if result is None or bare is None:
                print(f"  {size}, {rate:g} steps/s: no result (see the tmux pane's output)")
                continue
            share, floor_share = result["cpu_s"] / result["wall_s"], \
                bare["cpu_s"] / bare["wall_s"]
            rows.append({"size": size, "steps_per_s": rate, "cpu_share": share,
                         "floor_share": floor_share, "ratio": share / floor_share,
                         "views_per_s": result["views"] / result["wall_s"],
                         "threads": by_thread(result), "floor_threads": by_thread(bare)})
            print(f"  {size:>7}, {rate:>4g} steps/s: monitor {share:.2%} of one core, floor "
                  f"{floor_share:.2%}: {share / floor_share:.2f}x (target < {FLOOR_TARGET}x), "
                  f"{rows[-1]['views_per_s']:.1f} views/s", flush=True)
            print("      by thread: monitor " + shares_text(rows[-1]["threads"]) + "; floor "
                  + shares_text(rows[-1]["floor_threads"]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--size", default="100x30", help="the tmux pane, WIDTHxHEIGHT")
    parser.add_argument("--paced", nargs="*", type=float, metavar="STEPS_PER_S",
                        help="instead of training: synthetic runs at these step rates "
                             "(default 1 10 50), in each of --sizes")
    parser.add_argument("--sizes", nargs="+", default=["80x24", "200x60"],
                        help="pane sizes for --paced")
    parser.add_argument("--monitor", nargs=2, metavar=("RUN_DIR", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--floor", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    if args.monitor:
        monitor(*args.monitor, args.seconds)
        return
    if args.floor:
        floor(args.floor, args.seconds)
        return
    if shutil.which("tmux") is None:
        print("bench/tui_cost.py: skipped, it needs tmux (apt-get install tmux)")
        return
    tmux = ["tmux", "-L", f"scalemon-bench-{os.getpid()}"]
    if args.paced is not None:
        rates = args.paced or [1.0, 10.0, 50.0]
        print(f"monitor CPU beside the bare Textual floor, synthetic two-rank runs, "
              f"{args.seconds:g} s each")
        with tempfile.TemporaryDirectory(prefix="scalemon-tui-bench-") as tmp:
            try:
                rows = paced(tmux, Path(tmp), args.sizes, rates, args.seconds)
            finally:
                subprocess.run(tmux + ["kill-server"], capture_output=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"paced": rows}))
        return
    with tempfile.TemporaryDirectory(prefix="scalemon-tui-bench-") as tmp:
        home = Path(tmp) / "home"
        run = start_run(home, args.depth, args.vocab)
        try:
            while steps_done(run) < 10:  # past start-up and warm-up
                time.sleep(0.5)
            steps_before, t_before = steps_done(run), time.monotonic()
            result, bare = watch_and_floor(tmux, args.size, home, run.path, Path(tmp),
                                           args.seconds)
            # (the floor ran after the monitor, while the ranks trained on beside it)
            steps_per_s = (steps_done(run) - steps_before) / (time.monotonic() - t_before)
        finally:
            stop_run(run)
            subprocess.run(tmux + ["kill-server"], capture_output=True)
        if result is None:
            sys.exit("the monitor wrote no result (see the tmux pane's output)")
        delays = sorted(step_delays(run, result["frames"]))
    share = result["cpu_s"] / result["wall_s"]
    p50 = statistics.median(delays)
    p95 = delays[round(0.95 * (len(delays) - 1))]
    floor_share = bare["cpu_s"] / bare["wall_s"] if bare else None
    print(f"screen watching a d{args.depth} vocab {args.vocab:,} run, two gloo ranks, "
          f"{steps_per_s:.1f} steps/s, {result['wall_s']:.0f} s in a {args.size} tmux pane, "
          f"{result['views'] / result['wall_s']:.1f} views/s")
    print(f"monitor CPU: {share:.1%} of one core ({share / CPU_TARGET:.2f}x the "
          f"{CPU_TARGET:.0%} target)")
    if floor_share is not None:
        print(f"bare Textual floor (six text panels and a sparkline redrawn once a second, "
              f"same pane): {floor_share:.1%} of one core; the monitor is "
              f"{share / floor_share:.2f}x it")
    print("  by thread: " + shares_text(by_thread(result)))
    print(f"step end to screen: median {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
          f"({p95 / DELAY_TARGET_S:.2f}x the {DELAY_TARGET_S * 1000:.0f} ms target), "
          f"max {delays[-1] * 1000:.0f} ms over {len(delays)} steps")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cpu_share": share, "floor_share": floor_share, "size": args.size,
            "p50_s": p50, "p95_s": p95, "steps_per_s": steps_per_s,
            "seconds": result["wall_s"], "views_per_s": result["views"] / result["wall_s"]}))


if __name__ == "__main__":
    main()
