"""`scalemon run`: launch a training run (scalemon's trainer, or a script with the probe) and
watch it until it ends or the person leaves it training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scalemon.cli.base import FiniteFloat, UserError, cli, run_screen, screen_possible

if TYPE_CHECKING:
    from scalemon.io.rundir import RunDir

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
@click.option("--python", "python", metavar="PYTHON",
              help="The ranks' interpreter, for a script whose packages live in another "
              "environment [default: the one scalemon runs in].")
@click.pass_context
def run(ctx: click.Context, script: tuple[str, ...], resume: str | None, no_tui: bool,
        interval: float, price: float | None, **options: Any) -> int:
    """Launch a training run through torch.distributed's launcher and watch it.

    \b
    scalemon run --depth 4 --backend gloo           the built-in trainer, 2 gloo ranks
    scalemon run --nproc-per-node 2 -- train.py ARGS   your script, probe injected
    scalemon run --nproc-per-node 2 -- -m scripts.base_train ARGS   a module, from here
    scalemon run --depth 4 --backend gloo --nnodes 2 --node-rank 0 --master-addr 192.168.1.10
                                      node 0 of two machines; it prints node 1's command
    """
    from click.core import ParameterSource

    from scalemon.io.rundir import resolve_run
    from scalemon.run import launch

    problem = None if options["python"] else launch.torch_problem()
    if problem:
        raise UserError(problem)
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
        run_dir = launch.create_run(launch.RunOptions(script=tuple(script), **options))
    screen = None if no_tui or not screen_possible() else run_screen()
    return _watch_launched(run_dir, interval, screen, price)


def _prepare_resume(run_dir: RunDir, steps: int | None) -> RunDir:
    """Check the run can go on (nothing is changed until it can), then set it up to."""
    from scalemon.io.listing import describe

    if describe(run_dir).live:
        raise UserError(f"run {run_dir.name} is still running")
    config = run_dir.read_config()
    problem = config.relaunch_problem()
    if problem:
        raise UserError(f"cannot resume {run_dir.name}: {run_dir.config_path} is not a "
                        f"launchable config ({problem})")
    data = config.train.data
    if data and not Path(data).exists():
        raise UserError(f"cannot resume {run_dir.name}: its --data {data} is gone")
    for what, path in (("directory", config.launch.cwd), ("--python", config.launch.python)):
        if path and not Path(path).exists():
            raise UserError(f"cannot resume {run_dir.name}: its {what} {path} is gone")
    if steps:
        config = replace(config, train=replace(config.train, steps=steps))
    run_dir.write_config(config)
    run_dir.status_path.unlink(missing_ok=True)
    return run_dir


def _watch_launched(run_dir: RunDir, interval: float, screen: Any = None,
                    price: float | None = None) -> int:
    """Start the supervisor and watch the run (screen or headless); the exit code is the
    trainer's, or 0 when the person leaves it training."""
    import signal
    import subprocess

    from scalemon.core.launcherlog import missing_module, rank_error_lines
    from scalemon.io.tail import read_tail
    from scalemon.run import launch
    from scalemon.sources.rundir import RunDirSource
    from scalemon.views.headless import follow

    supervisor = launch.start_supervisor(run_dir)
    click.echo(f"run {run_dir.name} in {run_dir.path}")
    keys = ("q leaves it training, s stops it" if screen is not None else
            "Ctrl-C stops the run (checkpoint first), twice leaves it running")
    click.echo(f"  logs: {run_dir.logs_dir}/stdout.log, stderr.log; {keys}")
    config = run_dir.read_config()
    nnodes = config.launch.nnodes
    if nnodes > 1 and config.launch.node_rank == 0:
        nodes = "node 1" if nnodes == 2 else f"nodes 1 to {nnodes - 1}, each with its --node-rank,"
        click.echo(f"  start {nodes} of this run with:\n    {launch.peer_command(config)}")
    interrupts: list[int] = []
    hangups: list[int] = []

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupts.append(signum)
        if len(interrupts) == 1:
            click.echo("stopping the run: the ranks save a checkpoint and exit "
                       "(Ctrl-C again to leave it running)", err=True)
            supervisor.send_signal(signal.SIGTERM)

    def detached() -> bool:
        return len(interrupts) > 1 or hangups != []

    def stop_run() -> bool:
        supervisor.send_signal(signal.SIGTERM)
        return True

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    with RunDirSource(run_dir, system=True) as source:
        if screen is not None:
            hint = (f"left run {run_dir.name} training; watch it again with: "
                    f"scalemon attach --run {run_dir.name}")
            final = screen(source, price=price, on_quit_hint=hint, stop_run=stop_run)
            if final == "quit":
                return 0
        else:
            follow(source, click.echo, interval,
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
        source.catch_up()
        status = run_dir.read_status()
        final = source.summary().phase
    code = status.exit_code if status else supervisor.returncode
    code = code if isinstance(code, int) else 1
    if final == "failed" or code != 0:
        click.echo(f"run {run_dir.name} failed with exit code {code}; last lines of stderr:",
                   err=True)
        stderr = read_tail(run_dir.stderr_log)
        for line in rank_error_lines(stderr, 8):
            click.echo(f"  {line}", err=True)
        config = run_dir.read_config()
        module = missing_module(stderr)
        if module and config.command == "script" and not config.launch.python:
            click.echo(f"the script imports {module!r}, which scalemon's Python lacks: give "
                       "the script's own environment with --python PATH (its venv's python)",
                       err=True)
    else:
        click.echo(f"run {run_dir.name} {final}: resume or extend it with "
                   f"scalemon run --resume {run_dir.name} [--steps N]")
    return code
