"""The `scalemon` command line: `plan`, `run`, `attach`, `ls` and `replay` (one module each)
on one click group, and `main`, which turns every expected failure into one line."""

from __future__ import annotations

import os
import sys

import click

from scalemon.cli import attach_command, plan_command, run_command, runs_command
from scalemon.cli.base import cli
from scalemon.core.errors import ScalemonError

__all__ = ["attach_command", "cli", "main", "plan_command", "run_command", "runs_command"]

NO_COMMAND = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with exit code 2 for bad input, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="scalemon", standalone_mode=False)
    except NO_COMMAND as error:  # `scalemon` alone: the help, as with --help
        click.echo(error.ctx.get_help())
        sys.exit(0)
    except ScalemonError as error:
        click.echo(f"scalemon: error: {error}", err=True)
        sys.exit(2)
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
