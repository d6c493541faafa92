"""What the commands share: the click group, the option types, and the one-line errors.

Each command module imports what it needs inside its commands' bodies, so `scalemon --help`
starts fast: torch and textual load only when a command uses them.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from scalemon import __version__
from scalemon.core.errors import ScalemonError


class UserError(ScalemonError):
    """Bad input from the person at the keyboard (an option that makes no sense here)."""


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (click's own lets them through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="scalemon")
def cli() -> None:
    """Watch nanochat-shaped GPT training runs: where each step's time goes,
    whether the model learns, and when (and where) the run should finish."""


def echo_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


LOG_OPTIONS = [
    click.option("--steps", type=click.IntRange(min=1),
                 help="Step horizon of a log whose lines have no /N (for the ETA)."),
    click.option("--vocab", type=click.IntRange(min=2),
                 help="Vocabulary size of a log's model (for the ln(vocab) baseline)."),
]


def log_options(command: Any) -> Any:
    for option in reversed(LOG_OPTIONS):
        command = option(command)
    return command


def log_file(path_text: str) -> Path:
    """A readable regular file for --log, or a one-line UserError."""
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


def screen_possible() -> bool:
    """A terminal, or textual-serve's web driver (whose stdout is not a terminal)."""
    return sys.stdout.isatty() or bool(os.environ.get("TEXTUAL_DRIVER"))


def run_screen() -> Any:
    """The Textual screen's entry point, when it is installed and importable."""
    try:
        from scalemon.tui.app import run_screen as screen
    except ImportError:
        return None
    return screen
