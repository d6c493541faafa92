"""Start a tiny two-rank gloo run and watch it on the live screen.

This is what `scalemon run` does once its CLI calls `run_screen`; the tmux test
(tests/test_tui_e2e.py) and the benchmark (bench/tui_cost.py) use it until then.

    python tests/tui_launcher.py NAME STEPS
"""

from __future__ import annotations

import sys

from scalemon import launch
from scalemon.collector import Collector
from scalemon.tui.app import run_screen

TINY = dict(depth=1, vocab=256, seq_len=64, device_batch=4, tokens_per_step=1024,
            backend="gloo", threads_per_rank=1, checkpoint_every=500)


def start(name: str, steps: int):
    run = launch.create_run(launch.RunOptions(name=name, steps=steps, **TINY))
    launch.start_supervisor(run)
    return run


def main(argv: list[str]) -> int:
    name, steps = argv[0], int(argv[1])
    run = start(name, steps)
    with Collector(run, system=True) as collector:
        result = run_screen(collector, price=2.0, stop_run=lambda: launch.request_stop(run),
                            on_quit_hint=f"left run {name} training; watch it again with: "
                                         f"scalemon attach --run {name}")
    print(f"screen ended: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
