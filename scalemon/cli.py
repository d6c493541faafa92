"""The `scalemon` command line.

Each command imports what it needs inside its body, so `scalemon --help` starts
fast: torch and textual load only when a command uses them.
"""

from __future__ import annotations

import json
import math
import os
import sys

import click

from scalemon import __version__


class UserError(click.ClickException):
    """Bad input from the person at the keyboard: one line, exit code 2."""

    exit_code = 2


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (click's own lets them through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="scalemon")
def cli() -> None:
    """Watch nanochat-shaped GPT training runs: where each step's time goes,
    whether the model learns, and when (and where) the run should finish."""


@cli.command()
@click.argument("more_depths", nargs=-1, type=click.IntRange(min=1), metavar="[DEPTH]...")
@click.option("--depth", "depths", multiple=True, type=click.IntRange(min=1),
              help="Model depth (layers); list several: --depth 4 8 12 20.")
@click.option("--vocab", type=click.IntRange(min=2), default=65_536, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Sequence length T for the attention FLOPs.")
@click.option("--tokens-per-step", type=click.IntRange(min=1), default=65_536,
              show_default=True, help="Tokens per optimizer step (all ranks, all micro-steps).")
@click.option("--steps", type=click.IntRange(min=1), help="Step horizon.")
@click.option("--tokens-per-param", type=FiniteFloat(min=0, min_open=True),
              help="Horizon as tokens per parameter (Chinchilla: 20); the default.")
@click.option("--ref-tok-s", metavar="TOK_S@DEPTH",
              help="A throughput you measured, e.g. 115@4: scaled to each depth by FLOPs.")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Machines in the measured setup, joined by --link.")
@click.option("--link", default="1gbit", show_default=True,
              help="Link between nodes: 1gbit, 2.5gbe, 10gbit, 125MB/s ...")
@click.option("--latency-ms", type=FiniteFloat(min=0), default=0.1, show_default=True,
              help="Per-hop link latency.")
@click.option("--device", "devices", multiple=True, metavar="NAME",
              help="GPU preset for a what-if setup (h100 h200 a100 mi300x rtx4090 rtx4070); "
                   "repeat for several.")
@click.option("--mfu", type=FiniteFloat(min=0, max=1, min_open=True), default=0.4,
              show_default=True, help="Assumed model FLOPs utilisation on --device.")
@click.option("--dtype", type=click.Choice(["bf16", "fp32"]), default="bf16", show_default=True,
              help="Which peak of --device to use.")
@click.option("--grad-dtype", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="Gradient precision on the wire.")
@click.option("--price", type=FiniteFloat(min=0), help="Price per GPU-hour for --device.")
@click.option("--json", "as_json", is_flag=True, help="Print the same data as JSON.")
def plan(more_depths, depths, vocab, seq_len, tokens_per_step, steps, tokens_per_param,
         ref_tok_s, nodes, link, latency_ms, devices, mfu, dtype, grad_dtype, price,
         as_json) -> None:
    """Print params, FLOPs, speed, step time, time to horizon, cost and sync for depths.

    \b
    scalemon plan --depth 4 8 12 20 --ref-tok-s 115@4 --tokens-per-step 65536 \\
                  --steps 200000 --nodes 2 --link 1gbit --device h100 --price 2
    """
    from scalemon.core import scaling
    from scalemon.core.plan import PlanSettings, build_plan, render_plan
    from scalemon.core.units import parse_link, parse_reference

    all_depths = tuple(depths) + tuple(more_depths)
    if not all_depths:
        raise UserError("give at least one depth: scalemon plan --depth 4 8 12")
    if steps and tokens_per_param:
        raise UserError("give either --steps or --tokens-per-param, not both")
    try:
        ref = parse_reference(ref_tok_s) if ref_tok_s else (None, None)
        link_bit_s = parse_link(link)
        for key in devices:
            scaling.device_preset(key)
    except ValueError as error:
        raise UserError(str(error)) from None
    settings = PlanSettings(
        depths=all_depths, vocab=vocab, seq_len=seq_len, tokens_per_step=tokens_per_step,
        steps=steps, tokens_per_param=tokens_per_param or 20.0, ref_tok_s=ref[0],
        ref_depth=ref[1], nodes=nodes, link_bit_s=link_bit_s, latency_s=latency_ms / 1000,
        devices=tuple(d.lower() for d in devices), mfu=mfu, dtype=dtype,
        grad_dtype=grad_dtype, price_per_hour=price,
    )
    result = build_plan(settings)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_plan(result))


RUN_OPTIONS_FOR_RESUME = {"steps", "no_tui", "interval", "resume", "price"}


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("script", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT ARGS...]")
@click.option("--depth", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--vocab", type=click.IntRange(min=2), default=65_536, show_default=True)
@click.option("--backend", type=click.Choice(["gloo", "nccl"]),
              help="gloo (CPU) or nccl (CUDA); default: from --device.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--nproc-per-node", type=click.IntRange(min=1),
              help="Ranks on this machine [default: 2 on CPU, one per GPU].")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--master-addr", default="127.0.0.1", show_default=True)
@click.option("--master-port", type=click.IntRange(1, 65535), default=29500, show_default=True)
@click.option("--relay-port", type=click.IntRange(1, 65535),
              help="Where node 0 takes the other nodes' records [default: master port + 1].")
@click.option("--run-secret", envvar="SCALEMON_RUN_SECRET", show_envvar=True, metavar="HEX",
              help="The secret node 0 printed; the other nodes need it to send their records.")
@click.option("--link", help="Link between the nodes, for the sync model: 1gbit, 2.5gbe, "
              "100mbit ... [default: the NIC speed, when the kernel knows it].")
@click.option("--steps", type=click.IntRange(min=1), help="Step horizon.")
@click.option("--tokens-per-param", type=FiniteFloat(min=0, min_open=True),
              help="Horizon as tokens per parameter [default: 20, Chinchilla].")
@click.option("--tokens-per-step", type=click.IntRange(min=1),
              help="Tokens per optimizer step = device batch x seq x world x accumulation.")
@click.option("--seq-len", type=click.IntRange(min=8),
              help="[default: 512 on CPU, 2048 on CUDA]")
@click.option("--device-batch", type=click.IntRange(min=1),
              help="Sequences per rank per micro-step [default: 1 on CPU, 32 on CUDA].")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=3e-3,
              show_default=True)
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=100, show_default=True,
              help="Steps between checkpoints (0: only at the end).")
@click.option("--threads-per-rank", type=click.IntRange(min=1),
              help="[default: cores / local ranks]")
@click.option("--data", type=click.Path(), help="Pre-tokenized shards (uint16/uint32 .bin) "
              "instead of the built-in synthetic stream.")
@click.option("--name", help="Run name [default: d<depth>-<date>-<time>].")
@click.option("--run-dir", type=click.Path(), help="Put the run dir here instead.")
@click.option("--resume", metavar="RUN", help="Continue RUN from its last checkpoint.")
@click.option("--no-tui", is_flag=True, help="Print status lines instead of the screen.")
@click.option("--interval", type=FiniteFloat(min=0.5), default=5.0, show_default=True,
              help="Seconds between headless status lines.")
@click.option("--price", type=FiniteFloat(min=0),
              help="Price per GPU-hour for the screen's what-if rows.")
@click.pass_context
def run(ctx, script, resume, no_tui, interval, price, **options) -> int:
    """Launch a training run through torch.distributed's launcher and watch it.

    \b
    scalemon run --depth 4 --backend gloo           the built-in trainer, 2 gloo ranks
    scalemon run --nproc-per-node 2 -- train.py ARGS   your script, with the probe on
    scalemon run --depth 4 --backend gloo --nnodes 2 --node-rank 0 --master-addr 192.168.1.10
                                      node 0 of two machines; it prints node 1's command
    """
    from click.core import ParameterSource

    from scalemon import launch
    from scalemon.rundir import RunDirError, resolve_run

    problem = launch.torch_problem()
    if problem:
        raise UserError(problem)
    try:
        if resume:
            given = {name for name in ctx.params
                     if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
            extra = sorted(given - RUN_OPTIONS_FOR_RESUME - {"script"})
            if extra or script:
                what = f"--{extra[0].replace('_', '-')}" if extra else "a script"
                raise UserError(f"--resume continues a run with its own config; only --steps "
                                f"may change (got {what})")
            run_dir = _prepare_resume(resolve_run(resume), options["steps"])
        else:
            opts = launch.RunOptions(script=tuple(script), **options)
            run_dir = launch.create_run(opts)
    except (launch.LaunchError, RunDirError) as error:
        raise UserError(str(error)) from None
    screen = None if no_tui or not _screen_possible() else _run_screen()
    return _watch_launched(run_dir, interval, screen, price)


def _prepare_resume(run_dir, steps):
    """Check the run can go on (nothing is changed until it can), then set it up to."""
    from pathlib import Path

    from scalemon.rundir import describe, relaunch_problem

    listing = describe(run_dir)
    if listing.state in ("running", "starting"):
        raise UserError(f"run {run_dir.name} is still running")
    config = run_dir.read_config()
    problem = relaunch_problem(config)
    if problem:
        raise UserError(f"cannot resume {run_dir.name}: {run_dir.config_path} is not a "
                        f"launchable config ({problem})")
    data = config["train"].get("data")
    if data and not Path(data).exists():
        raise UserError(f"cannot resume {run_dir.name}: its --data {data} is gone")
    if steps:
        config["train"]["steps"] = steps
    run_dir.write_config(config)
    run_dir.status_path.unlink(missing_ok=True)
    return run_dir


def _watch_launched(run_dir, interval: float, screen=None, price: float | None = None) -> int:
    """Start the supervisor and watch the run (screen or headless); the exit code is the
    trainer's, or 0 when the person leaves it training."""
    import signal
    import subprocess

    from scalemon import headless, launch
    from scalemon.collector import Collector
    from scalemon.launcherlog import rank_error_lines, read_tail

    supervisor = launch.start_supervisor(run_dir)
    click.echo(f"run {run_dir.name} in {run_dir.path}")
    keys = ("q leaves it training, s stops it" if screen is not None else
            "Ctrl-C stops the run (checkpoint first), twice leaves it running")
    click.echo(f"  logs: {run_dir.logs_dir}/stdout.log, stderr.log; {keys}")
    config = run_dir.read_config()
    nnodes = config["launch"]["nnodes"]
    if nnodes > 1 and config["launch"]["node_rank"] == 0:
        nodes = "node 1" if nnodes == 2 else f"nodes 1 to {nnodes - 1}, each with its --node-rank,"
        click.echo(f"  start {nodes} of this run with:\n    {launch.peer_command(config)}")
    interrupts = []

    def on_interrupt(signum, frame):
        interrupts.append(signum)
        if len(interrupts) == 1:
            click.echo("stopping the run: the ranks save a checkpoint and exit "
                       "(Ctrl-C again to leave it running)", err=True)
            supervisor.send_signal(signal.SIGTERM)

    def detached() -> bool:
        return len(interrupts) > 1 or hangups != []

    hangups = []
    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    with Collector(run_dir, system=True) as collector:
        if screen is not None:
            hint = (f"left run {run_dir.name} training; watch it again with: "
                    f"scalemon attach --run {run_dir.name}")
            final = screen(collector, price=price, on_quit_hint=hint,
                           stop_run=lambda: supervisor.send_signal(signal.SIGTERM) or True)
            if final == "quit":
                return 0
        else:
            final = headless.follow(collector, click.echo, interval,
                                    stop=lambda: detached() or supervisor.poll() is not None)
        if detached():
            click.echo(f"left run {run_dir.name} training; see it with: "
                       f"scalemon replay {run_dir.name}", err=True)
            return 0
        try:
            supervisor.wait(timeout=120)
        except subprocess.TimeoutExpired:
            click.echo("the launcher has not exited 120 s after the ranks ended", err=True)
            return 1
        collector.catch_up()
        status = run_dir.read_status()
        final = collector.state.state()
    code = status.get("exit_code") if status else supervisor.returncode
    code = code if isinstance(code, int) else 1
    if final == "failed" or code != 0:
        click.echo(f"run {run_dir.name} failed with exit code {code}; last lines of stderr:",
                   err=True)
        for line in rank_error_lines(read_tail(run_dir.logs_dir / "stderr.log"), 8):
            click.echo(f"  {line}", err=True)
    else:
        click.echo(f"run {run_dir.name} {final}: resume or extend it with "
                   f"scalemon run --resume {run_dir.name} [--steps N]")
    return code


@cli.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_runs_command(as_json: bool) -> None:
    """List runs with their state, step / horizon and last loss."""
    import time

    from scalemon.core.units import format_duration
    from scalemon.rundir import RunDirError, describe, list_runs, runs_root

    listings = []
    for run_dir in list_runs():
        try:
            listings.append(describe(run_dir))
        except RunDirError as error:
            click.echo(f"scalemon: warning: {error} (skipped)", err=True)
    if as_json:
        click.echo(json.dumps([
            {"name": item.run.name, "path": str(item.run.path), "state": item.state,
             "step": item.step, "horizon": item.horizon, "loss": item.loss,
             "updated": item.updated, "world": item.world} for item in listings], indent=2))
        return
    if not listings:
        click.echo(f"no runs in {runs_root()}; start one with: scalemon run --depth 4")
        return
    rows = [("NAME", "STATE", "STEP", "LOSS", "WORLD", "UPDATED")]
    for item in listings:
        horizon = f"/{item.horizon:,}" if item.horizon else ""
        rows.append((item.run.name, item.state, f"{item.step + 1:,}{horizon}",
                     "-" if item.loss is None else f"{item.loss:.3f}", str(item.world or "-"),
                     format_duration(time.time() - item.updated) + " ago"))
    _echo_table(rows)


def _echo_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


LOG_OPTIONS = [
    click.option("--steps", type=click.IntRange(min=1),
                 help="Step horizon of a log whose lines have no /N (for the ETA)."),
    click.option("--vocab", type=click.IntRange(min=2),
                 help="Vocabulary size of a log's model (for the ln(vocab) baseline)."),
]


def log_options(command):
    for option in reversed(LOG_OPTIONS):
        command = option(command)
    return command


def _log_file(path_text: str):
    """A readable regular file for --log, or a one-line UserError."""
    from pathlib import Path

    path = Path(path_text).expanduser()
    if not path.exists():
        raise UserError(f"no such log file: {path_text}")
    if not path.is_file():
        raise UserError(f"--log {path_text} is not a regular file")
    try:
        path.open("rb").close()
    except OSError as error:
        raise UserError(f"cannot read log {path_text}: {error.strerror or error}") from None
    return path


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
def attach(pid, run_name, log_path, steps, vocab, no_tui, interval, show_stacks, price) -> int:
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
    from scalemon import attach as attaching

    target = _attach_target(pid, run_name, log_path)
    if target.run is not None and (steps or vocab):
        raise UserError("--steps and --vocab are for logs; a scalemon run has them in its config")
    if show_stacks:
        if target.run is not None:
            from scalemon.collector import Collector

            with Collector(target.run, live=False) as collector:
                pids = attaching.stack_pids(collector)
        elif target.root:
            pids = attaching.python_processes(target.root)
        else:
            raise UserError("--stacks needs a pid or a run to dump")
        click.echo(attaching.stacks(pids))
        return 0
    return _watch_attached(target, steps, vocab, no_tui, interval, price)


def _attach_target(pid, run_name, log_path):
    from scalemon import attach as attaching
    from scalemon.rundir import RunDirError, resolve_run

    if pid and run_name:
        raise UserError("give a pid or --run NAME, not both")
    log = _log_file(log_path) if log_path else None
    try:
        if run_name:
            if log is not None:
                raise UserError("--log is for processes scalemon did not start; a scalemon "
                                "run's steps are in its run dir")
            return attaching.Target(run=resolve_run(run_name))
        if pid:
            return attaching.target_for_pid(pid, log)
    except (attaching.AttachError, RunDirError) as error:
        raise UserError(str(error)) from None
    if log is not None:
        return attaching.Target(log=log)
    return attaching.Target(run=_pick_running_run())


def _pick_running_run():
    """The one running run; a list to choose from when several (asked on a terminal)."""
    from scalemon import attach as attaching

    listings = attaching.running_runs()
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
    _echo_table(rows)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(f"{len(listings)} runs are running: pick one with "
                        "scalemon attach --run NAME (or a pid)")
    choice = click.prompt("attach to", type=click.IntRange(1, len(listings)), default=1)
    return listings[choice - 1].run


def _attach_header(target, collector) -> list[str]:
    from scalemon import attach as attaching

    state = collector.state
    done = f"{len(state.loss_steps):,} steps so far"
    if state.loss_steps:
        done += f", steps {state.loss_steps[0]}-{state.loss_steps[-1]}"
    if collector.history_pending:
        done = (f"the last {len(state.loss_steps):,} steps now (to step {state.step}), the "
                "earlier ones folding in behind")
    if target.run is not None:
        role = f"; pid {target.pid} is {target.role}" if target.pid else ""
        return [f"attached to run {target.run.name} in {target.run.path}{role}",
                f"  history from the run dir: {done}; live from here. "
                "Ctrl-C detaches (the run keeps going)"]
    lines = [f"watching pid {target.pid} ({target.name}), a run scalemon did not start"
             if target.pid else f"following {target.log}"]
    if target.log is not None:
        parser = collector.parser
        lines.append(f"  steps from {target.log}: {done}" + (
            f" ({parser.unreadable} lines mention a step but could not be read)"
            if parser.unreadable else ""))
    else:
        lines.append(f"  {target.log_note}")
    lines.append("  the compute/sync split needs the step probe; it is a few lines in the "
                 "training loop (README: Your own training loop):")
    lines += ["    " + line for line in attaching.PROBE_SNIPPET.splitlines()]
    lines.append("  Ctrl-C stops watching (the process keeps going)")
    return lines


def _screen_possible() -> bool:
    """A terminal, or textual-serve's web driver (whose stdout is not a terminal)."""
    return sys.stdout.isatty() or bool(os.environ.get("TEXTUAL_DRIVER"))


def _run_screen():
    """The Textual screen's entry point, when it is installed and importable."""
    try:
        from scalemon.tui.app import run_screen
    except ImportError:
        return None
    return run_screen


def _attach_again_hint(target) -> str:
    if target.run is not None:
        return f"left run {target.run.name} going; watch it again with: " \
               f"scalemon attach --run {target.run.name}"
    again = f"scalemon attach {target.pid}" if target.pid else f"scalemon attach --log {target.log}"
    return f"stopped watching; watch again with: {again}"


def _stopper(target):
    """What the screen's stop key does: a scalemon run stops gracefully; others are not ours."""
    from scalemon import launch

    if target.run is None:
        return lambda: False
    return lambda: launch.request_stop(target.run)


def _watch_attached(target, steps, vocab, no_tui: bool, interval: float,
                    price: float | None = None) -> int:
    import signal

    from scalemon import attach as attaching
    from scalemon import headless
    from scalemon.rundir import RunDirError

    try:
        collector = attaching.open_collector(target, steps=steps, vocab=vocab)
    except RunDirError as error:
        raise UserError(str(error)) from None
    with collector:
        screen = None if no_tui or not _screen_possible() else _run_screen()
        if screen is not None:
            final = screen(collector, price=price, on_quit_hint=_attach_again_hint(target),
                           stop_run=_stopper(target))
            return 1 if final == "failed" else 0
        stops = []
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda number, frame: stops.append(number))
        for line in _attach_header(target, collector):
            click.echo(line)
        final = headless.follow(collector, click.echo, interval, stop=lambda: bool(stops))
    if stops:
        click.echo(_attach_again_hint(target), err=True)
        return 0
    return 1 if final == "failed" else 0


@cli.command()
@click.argument("run_name", metavar="[RUN]", required=False)
@click.option("--log", "log_path", metavar="FILE",
              help="Fold a finished training log instead of a run dir.")
@log_options
@click.option("--json", "as_json", is_flag=True, help="Print the folded state as JSON.")
def replay(run_name: str | None, log_path: str | None, steps, vocab, as_json: bool) -> None:
    """Fold a run's records (finished or running), or a log, and print what the monitor shows.

    \b
    scalemon replay RUN [--json]
    scalemon replay --log FILE [--steps N] [--vocab V] [--json]
    """
    from scalemon import headless
    from scalemon.collector import Collector
    from scalemon.rundir import RunDirError, resolve_run

    if run_name and log_path:
        raise UserError("give a run or --log FILE, not both")
    if log_path:
        _replay_log(_log_file(log_path), steps, vocab, as_json)
        return
    if not run_name:
        raise UserError("give a run name (see scalemon ls) or --log FILE")
    if steps or vocab:
        raise UserError("--steps and --vocab are for --log; a run has them in its config")
    try:
        collector = Collector(resolve_run(run_name), live=False)
    except RunDirError as error:
        raise UserError(str(error)) from None
    state = collector.state
    if as_json:
        summary = state.summary()
        summary["bad_lines"] = collector.bad_file_lines
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(headless.report(state))
    if collector.bad_file_lines:
        click.echo(f"({collector.bad_file_lines} unreadable record lines skipped)")


def _replay_log(log, steps, vocab, as_json: bool) -> None:
    from scalemon import headless
    from scalemon.logfollow import LogCollector

    with LogCollector(log, steps=steps, vocab=vocab, system=False) as collector:
        collector.end(f"end of {log.name}")
        state, parser = collector.state, collector.parser
        if as_json:
            summary = state.summary()
            summary["bad_lines"] = parser.unreadable
            summary["log"] = {"path": str(log), "lines": parser.lines, "steps": parser.steps,
                              "evals": [{"step": e.step, "metrics": dict(e.metrics)}
                                        for e in collector.evals],
                              "unreadable": parser.unreadable,
                              "last_unreadable": parser.last_unreadable}
            click.echo(json.dumps(summary, indent=2, default=str))
            return
        click.echo(headless.report(state))
        if parser.unreadable:
            click.echo(f"({parser.unreadable} lines mention a step but could not be read, "
                       f"e.g. {parser.last_unreadable!r})")


NO_COMMAND = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with exit code 2 for bad input, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="scalemon", standalone_mode=False)
    except NO_COMMAND as error:  # `scalemon` alone: the help, as with --help
        click.echo(error.ctx.get_help())
        sys.exit(0)
    except click.ClickException as error:
        click.echo(f"scalemon: error: {error.format_message()}", err=True)
        sys.exit(2 if isinstance(error, click.UsageError) else error.exit_code)
    except click.Abort:
        click.echo("scalemon: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # `scalemon plan | head`: the reader left; that is not an error.
        sys.stderr.close()
        sys.exit(0)
    except Exception as error:  # a bug: still one line, with a way to get the traceback
        if os.environ.get("SCALEMON_DEBUG"):
            raise
        click.echo(f"scalemon: internal error: {type(error).__name__}: {error} "
                   "(set SCALEMON_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
