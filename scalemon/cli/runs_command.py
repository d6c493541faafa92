"""`scalemon ls` and `scalemon replay`: the runs there are, and what one of them (or a log)
shows when folded whole."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scalemon.cli.base import FiniteFloat, UserError, cli, echo_table, log_file, log_options


@cli.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_runs_command(as_json: bool) -> None:
    """List runs with their state, step / horizon and last loss."""
    import time

    from scalemon.core.errors import RunDirError
    from scalemon.core.units import format_duration
    from scalemon.io.listing import describe
    from scalemon.io.rundir import list_runs, runs_root

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
    echo_table(rows)


@cli.command()
@click.argument("run_name", metavar="[RUN]", required=False)
@click.option("--log", "log_path", metavar="FILE",
              help="Fold a finished training log instead of a run dir.")
@log_options
@click.option("--price", type=FiniteFloat(min=0),
              help="Price per GPU-hour, for the verdict's GPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the folded state as JSON.")
def replay(run_name: str | None, log_path: str | None, steps: int | None, vocab: int | None,
           price: float | None, as_json: bool) -> None:
    """Fold a run's records (finished or running), or a log, and print what the monitor shows.

    \b
    scalemon replay RUN [--json]
    scalemon replay --log FILE [--steps N] [--vocab V] [--json]
    """
    from scalemon.io.rundir import resolve_run
    from scalemon.sources.rundir import RunDirSource
    from scalemon.views.headless import report
    from scalemon.views.text import verdict_text

    if run_name and log_path:
        raise UserError("give a run or --log FILE, not both")
    if log_path:
        _replay_log(log_file(log_path), steps, vocab, as_json)
        return
    if not run_name:
        raise UserError("give a run name (see scalemon ls) or --log FILE")
    if steps or vocab:
        raise UserError("--steps and --vocab are for --log; a run has them in its config")
    source = RunDirSource(resolve_run(run_name), live=False)
    summary = source.summary()
    if as_json:
        click.echo(json.dumps(summary.to_dict() | {"bad_lines": source.bad_file_lines,
                                                   "verdict": verdict_text(summary, price)},
                              indent=2, default=str))
        return
    click.echo(report(summary, price))
    if source.bad_file_lines:
        click.echo(f"({source.bad_file_lines} unreadable record lines skipped)")


def _replay_log(log: Path, steps: int | None, vocab: int | None, as_json: bool) -> None:
    from scalemon.sources.log import LogSource
    from scalemon.views.headless import report

    with LogSource(log, steps=steps, vocab=vocab, system=False) as source:
        source.end(f"end of {log.name}")
        summary, parser = source.summary(), source.parser
        if as_json:
            data = summary.to_dict() | {"bad_lines": parser.unreadable}
            data["log"] = {"path": str(log), "lines": parser.lines, "steps": parser.steps,
                           "evals": [{"step": e.step, "metrics": dict(e.metrics)}
                                     for e in source.evals],
                           "unreadable": parser.unreadable,
                           "last_unreadable": parser.last_unreadable}
            click.echo(json.dumps(data, indent=2, default=str))
            return
        click.echo(report(summary))
        if parser.unreadable:
            click.echo(f"({parser.unreadable} lines mention a step but could not be read, "
                       f"e.g. {parser.last_unreadable!r})")
