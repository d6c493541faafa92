"""`scalemon attach`: watch a run that is already going, found from any of its pids, by name,
or through its log."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from scalemon.cli.base import (
    FiniteFloat,
    UserError,
    cli,
    echo_table,
    log_file,
    log_options,
    run_screen,
    screen_possible,
)

if TYPE_CHECKING:
    from scalemon.io.rundir import RunDir
    from scalemon.run.discovery import Target
    from scalemon.sources.base import Source

@cli.command()
@click.argument("pid", type=click.IntRange(min=1), required=False)
@click.option("--run", "run_name", metavar="RUN", help="A scalemon run, by name (or path).")
@click.option("--log", "log_path", metavar="FILE",
              help="Read steps from this log (with a pid whose output is not a file, or alone).")
@log_options
@click.option("--no-tui", is_flag=True, help="Print status lines instead of the screen.")
@click.option("--interval", type=FiniteFloat(min=0.5), default=5.0, show_default=True,
              help="Seconds between headless status lines.")
@click.option("--stacks", "show_stacks", is_flag=True,
              help="Print every rank's current Python stack (py-spy) and exit.")
@click.option("--price", type=FiniteFloat(min=0),
              help="Price per GPU-hour for the screen's what-if rows.")
def attach(pid: int | None, run_name: str | None, log_path: str | None, steps: int | None,
           vocab: int | None, no_tui: bool, interval: float, show_stacks: bool,
           price: float | None) -> int:
    """Watch a run that is already going: history from its start, then live.

    \b
    scalemon attach                  the running scalemon run (a list when several)
    scalemon attach PID              any pid of a scalemon run (launcher, rank, `scalemon
                                     run`), or any training process scalemon did not start
    scalemon attach --run NAME       a scalemon run by name
    scalemon attach PID --log FILE   a process whose stdout is not a file: its log
    scalemon attach --log FILE       follow a log alone (nanochat's lines, or step/loss/dt)
    scalemon attach PID --stacks     every rank's Python stack through py-spy, then exit

    Quitting (Ctrl-C) leaves the run going; any number of monitors may watch one run.
    Exit code: 0 when the run ended or you detached, 1 when it failed.
    """
    from scalemon.io.processes import python_processes
    from scalemon.run import discovery
    from scalemon.run.stacks import stacks

    target = _attach_target(pid, run_name, log_path)
    if target.run is not None and (steps or vocab):
        raise UserError("--steps and --vocab are for logs; a scalemon run has them in its config")
    if show_stacks:
        if target.run is not None:
            from scalemon.sources.rundir import RunDirSource

            with RunDirSource(target.run, live=False) as source:
                pids = discovery.stack_pids(source)
        elif target.root:
            pids = python_processes(target.root)
        else:
            raise UserError("--stacks needs a pid or a run to dump")
        click.echo(stacks(pids))
        return 0
    return _watch_attached(target, steps, vocab, no_tui, interval, price)


def _attach_target(pid: int | None, run_name: str | None, log_path: str | None) -> Target:
    from scalemon.io.rundir import resolve_run
    from scalemon.run import discovery

    if pid and run_name:
        raise UserError("give a pid or --run NAME, not both")
    log = log_file(log_path) if log_path else None
    if run_name:
        if log is not None:
            raise UserError("--log is for processes scalemon did not start; a scalemon "
                            "run's steps are in its run dir")
        return discovery.Target(run=resolve_run(run_name))
    if pid:
        return discovery.target_for_pid(pid, log)
    if log is not None:
        return discovery.Target(log=log)
    return discovery.Target(run=_pick_running_run())


def _pick_running_run() -> RunDir:
    """The one running run; a list to choose from when several (asked on a terminal)."""
    from scalemon.io.listing import running_runs

    listings = running_runs()
    if not listings:
        raise UserError("no scalemon run is running (see scalemon ls); attach to any training "
                        "process with: scalemon attach PID, or follow a log with --log FILE")
    if len(listings) == 1:
        return listings[0].run
    rows = [("#", "NAME", "STATE", "STEP", "LOSS", "WORLD")]
    for i, item in enumerate(listings, 1):
        horizon = f"/{item.horizon:,}" if item.horizon else ""
        rows.append((str(i), item.run.name, item.state, f"{item.step + 1:,}{horizon}",
                     "-" if item.loss is None else f"{item.loss:.3f}", str(item.world or "-")))
    echo_table(rows)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(f"{len(listings)} runs are running: pick one with "
                        "scalemon attach --run NAME (or a pid)")
    choice = click.prompt("attach to", type=click.IntRange(1, len(listings)), default=1)
    return listings[choice - 1].run


def _attach_header(target: Target, source: Source) -> list[str]:
    from scalemon.sources.log import LogSource

    summary = source.summary()
    done = f"{summary.steps_seen:,} steps so far"
    if summary.first_step is not None:
        done += f", steps {summary.first_step}-{summary.step}"
    if source.history_pending:
        done = (f"the last {summary.steps_seen:,} steps now (to step {summary.step}), the "
                "earlier ones folding in behind")
    if target.run is not None:
        role = f"; pid {target.pid} is {target.role}" if target.pid else ""
        return [f"attached to run {target.run.name} in {target.run.path}{role}",
                f"  history from the run dir: {done}; live from here. "
                "Ctrl-C detaches (the run keeps going)"]
    lines = [f"watching pid {target.pid} ({target.name}), a run scalemon did not start"
             if target.pid else f"following {target.log}"]
    if target.log is not None and isinstance(source, LogSource):
        parser = source.parser
        lines.append(f"  steps from {target.log}: {done}" + (
            f" ({parser.unreadable} lines mention a step but could not be read)"
            if parser.unreadable else ""))
    else:
        lines.append(f"  {target.log_note}")
    if target.relaunch:
        lines.append("  the compute/sync split needs the step probe, which scalemon injects "
                     "with no code change: run it as")
        lines.append(f"    {target.relaunch}")
    else:
        lines.append("  the compute/sync split needs the step probe: run the script through "
                     "`scalemon run [launcher flags] -- SCRIPT ARGS` (or -m MODULE)")
    lines.append("  Ctrl-C stops watching (the process keeps going)")
    return lines


def _attach_again_hint(target: Target) -> str:
    if target.run is not None:
        return f"left run {target.run.name} going; watch it again with: " \
               f"scalemon attach --run {target.run.name}"
    again = f"scalemon attach {target.pid}" if target.pid else f"scalemon attach --log {target.log}"
    return f"stopped watching; watch again with: {again}"


def _stopper(target: Target) -> Callable[[], bool]:
    """What the screen's stop key does: a scalemon run stops gracefully; others are not ours."""
    from scalemon.run import launch

    run = target.run
    if run is None:
        return lambda: False
    return lambda: launch.request_stop(run)


def _watch_attached(target: Target, steps: int | None, vocab: int | None, no_tui: bool,
                    interval: float, price: float | None = None) -> int:
    import signal

    from scalemon.run import discovery
    from scalemon.views.headless import follow

    with discovery.open_source(target, steps=steps, vocab=vocab) as source:
        screen = None if no_tui or not screen_possible() else run_screen()
        if screen is not None:
            final = screen(source, price=price, on_quit_hint=_attach_again_hint(target),
                           stop_run=_stopper(target))
            return 1 if final == "failed" else 0
        stops: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda number, frame: stops.append(number))
        for line in _attach_header(target, source):
            click.echo(line)
        final = follow(source, click.echo, interval, stop=lambda: bool(stops))
    if stops:
        click.echo(_attach_again_hint(target), err=True)
        return 0
    return 1 if final == "failed" else 0
