"""The ``evalbot`` command line. Sub-commands live in their own modules and are mounted here.

Start-up stays short: the sub-commands whose modules import heavy libraries (the ledger's SQLAlchemy
and alembic, the watcher's PyGithub) are registered by name with their one-line help and imported
only when they run, so ``evalbot --help`` and ``evalbot models list`` import none of them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from evalbot.errors import EvalbotError
from reference_runtime.errors import ReferenceRuntimeError

# name -> (module, attribute: a typer.Typer sub-app or a command function, its one-line help).
# tests/test_cli_startup.py keeps each help line equal to the loaded command's own.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "ledger": ("evalbot.cli.ledger", "app", "The public ledger: query, export, verify, publish."),
    "watch": ("evalbot.cli.watch", "watch", "Poll GitHub for new PR heads and base-branch commits, evaluate each "
              "once, comment, label, record."),
    "worker": ("evalbot.cli.worker", "worker", "Evaluate the fleet's queued jobs on this box's GPUs: one worker "
               "process per GPU."),
    "queue": ("evalbot.cli.queue", "queue", "Show the fleet's jobs: state, queue position, worker, GPU, age."),
    "frontier": ("evalbot.cli.frontier", "app", "The frontier: the merge queue of open PRs' verified wins."),
    "demo": ("evalbot.demo", "demo", "Run the poller end to end against a local GitHub stand-in: example repo, PRs, "
             "watch, results."),
}


class LazyGroup(TyperGroup):
    """A typer group that imports the modules of :data:`LAZY_COMMANDS` on first use. While it lists
    its commands for ``--help`` it shows a placeholder carrying the help line instead."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        return names + [name for name in LAZY_COMMANDS if name not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            if self._listing:
                return TyperCommand(name=cmd_name, help=LAZY_COMMANDS[cmd_name][2])
            self.add_command(load_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def load_command(name: str) -> Any:
    """Import a lazy sub-command and convert it the way ``add_typer`` / ``command`` would have."""
    module, attribute, _ = LAZY_COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer(add_completion=False, rich_markup_mode=None)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    return typer.main.get_group(holder).commands[name]


# rich_markup_mode=None on every Typer: help texts are plain text, so "[ledger] url" or a TOML
# "[build]" in them is printed as written instead of being taken for console markup and dropped
# (plain click help also shows a flag as "--once / --no-once", without typer's "<bool>" column).
app = typer.Typer(cls=LazyGroup, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  context_settings={"max_content_width": 120}, help="Build, check and score CUDA kernel PRs.")
err_console = Console(stderr=True)


def example_repo(
    path: Annotated[Path, typer.Argument(help="where to create it: a missing or empty directory")],
) -> None:
    """Write an example kernels repository to evaluate: a baseline and faster, wrong and broken branches."""
    from evalbot.example_repo import SLOT, history, write_example_repo

    shas = write_example_repo(path)
    console = Console()
    console.print(f"[green]wrote[/] {escape(str(path))}: a kernels repository overriding slot {SLOT}", highlight=False)
    for commit in history():
        console.print(f"  {commit.branch:<7} {shas[commit.branch][:12]}  {escape(commit.subject)}", highlight=False,
                      soft_wrap=True)
    console.print(f"next: cd {escape(str(path))} && evalbot build faster --backend local   (see its README.md)",
                  highlight=False)


def _mount() -> None:
    from evalbot.cli import build, models
    from evalbot.cli import eval as eval_cmd

    app.add_typer(models.app, name="models")
    app.command()(models.reference)
    build.register(app)
    eval_cmd.register(app)
    app.command("example-repo")(example_repo)


_mount()


def _user_error(exc: BaseException) -> bool:
    """Worded for the user: evalbot's and the runtime's errors, and the ledger's. The ledger's base
    class is only looked up when its module was imported (otherwise none can have been raised)."""
    if isinstance(exc, EvalbotError | ReferenceRuntimeError):
        return True
    ledger_errors = sys.modules.get("ledger.errors")
    return ledger_errors is not None and isinstance(exc, ledger_errors.LedgerError)


def main() -> None:
    """Console-script entry: user errors become one red line and exit code 2, never a traceback."""
    try:
        # Outside standalone mode click returns a command's typer.Exit code instead of exiting.
        result = app(standalone_mode=False)
        if isinstance(result, int) and result:
            sys.exit(result)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except Exception as exc:  # click usage errors arrive here in standalone_mode=False
        if _user_error(exc):
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        # Recent typer releases vendor click, so its exception classes are not click's: match by shape.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise
