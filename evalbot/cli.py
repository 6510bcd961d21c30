"""The ``evalbot`` command line. Sub-commands live in their own modules and are mounted here."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from evalbot.errors import EvalbotError
from reference_runtime.errors import ReferenceRuntimeError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Build, check and score CUDA kernel PRs.")
err_console = Console(stderr=True)


def _mount() -> None:
    from evalbot import cli_build, cli_eval, cli_models
    from evalbot.cli_ledger import app as ledger_app
    from evalbot.cli_watch import watch

    app.add_typer(cli_models.app, name="models")
    app.add_typer(ledger_app, name="ledger")
    app.command()(cli_models.reference)
    app.command()(watch)
    cli_build.register(app)
    cli_eval.register(app)


_mount()


def main() -> None:
    """Console-script entry: user errors become one red line and exit code 2, never a traceback."""
    try:
        # Outside standalone mode click returns a command's typer.Exit code instead of exiting.
        result = app(standalone_mode=False)
        if isinstance(result, int) and result:
            sys.exit(result)
    except (EvalbotError, ReferenceRuntimeError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except Exception as exc:  # click usage errors arrive here in standalone_mode=False
        # Recent typer releases vendor click, so its exception classes are not click's: match by shape.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise
