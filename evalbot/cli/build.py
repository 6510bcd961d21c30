"""``evalbot build``: build a kernels tree (a directory, or a commit fetched into the mirror cache)
the way the validator will; ``evalbot build-image``: make a build image from this machine's toolkit."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalbot.config import Config, load_config
from evalbot.errors import EvalbotError

console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="validator TOML config")]


def build(
    target: Annotated[str, typer.Argument(help="a directory with kernels.toml, or a commit / pull/N/head / branch")],
    repo: Annotated[str, typer.Option(help="repository to fetch a commit from (URL or path)")] = ".",
    from_url: Annotated[str | None, typer.Option("--from", help="fetch from this fork instead")] = None,
    arch: Annotated[str, typer.Option(help="GPU architecture to compile for")] = "sm_90",
    backend: Annotated[str | None, typer.Option(help="docker or local (default: the config's)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="rebuild even if cached")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON here")] = None,
    config: ConfigOpt = None,
) -> None:
    """Compile every slot the tree's manifest overrides; exit 1 on REJECT."""
    from evalbot.build.backend import make_backend
    from evalbot.build.builder import build_tree
    from evalbot.build.local_backend import WARNING, unshare_prefix
    from evalbot.build.nvcc import require_arch

    cfg = load_config(config)
    if backend is not None:
        if backend not in ("docker", "local"):
            raise typer.BadParameter("must be docker or local", param_hint="--backend")
        cfg = dataclasses.replace(cfg, build=dataclasses.replace(cfg.build, backend=backend))
    if cfg.build.backend == "local":
        network = "no network (unshare)" if unshare_prefix() else "WITH network"
        console.print(f"[bold white on red] {WARNING}; {network} [/]")
    # The operator's own choices are checked before anything is fetched: an arch the backend's nvcc
    # cannot target is an error (exit 2), not a REJECT of every slot.
    runner = make_backend(cfg.build)
    require_arch(runner, arch)

    with tempfile.TemporaryDirectory(prefix="evalbot-tree-") as tmp:
        tree, what = _resolve_target(target, repo, from_url, cfg, Path(tmp))
        with console.status(f"building {what} for {arch}") as status:
            report = build_tree(tree, cfg, arch, backend=runner, use_cache=not no_cache,
                                progress=lambda m: status.update(m))

    table = Table(title=f"{what} · {arch} · {report.backend}{'' if report.sandboxed else ' (NOT SANDBOXED)'}")
    for column in ("slot", "result", "seconds", "cubin / reason"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for slot in report.slots:
        result = "[red]REJECT" if not slot.ok else "[cyan]cached" if slot.cached else "[green]built"
        detail = str(slot.cubin) if slot.ok else slot.reason
        table.add_row(slot.slot, result, f"{slot.seconds:.2f}", escape(detail))
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.ok:
        cached = sum(s.cached for s in report.slots)
        console.print(f"[bold green]OK[/] {len(report.slots)} slots ({cached} cached) in {report.seconds:.2f} s")
        return
    for reason in report.reasons:
        console.print(f"[bold red]REJECT[/] {escape(reason)}", soft_wrap=True)
    raise typer.Exit(1)


def _resolve_target(target: str, repo: str, from_url: str | None, cfg: Config, tmp: Path) -> tuple[Path, str]:
    """A directory is built as it stands; anything else is a revision fetched and exported."""
    from evalbot.fetch import Mirror
    from evalbot.manifest import MANIFEST_NAME

    path = Path(target).expanduser()
    if path.is_dir():
        return path, target
    # Said as what it is, rather than as git's "invalid refspec" for a path no ref can spell.
    if path.exists() or target.startswith(("/", "./", "../", "~")) or target.endswith("/") or target in (".", ".."):
        state = "is not a directory" if path.exists() else "does not exist"
        raise EvalbotError(f"{target}: {state}; give a directory holding {MANIFEST_NAME}, or a commit, branch or "
                           "pull/N/head of --repo")
    mirror = Mirror(cfg.cache_dir, repo, timeout_s=cfg.build.fetch_timeout_s)
    sha = mirror.fetch(target, from_url=from_url)
    return mirror.export(sha, tmp / "tree"), f"{target} ({sha[:12]})"


def build_image(
    tag: Annotated[str, typer.Option(help="image tag to create")] = "evalbot-host-toolchain:1",
    config: ConfigOpt = None,
) -> None:
    """Import a minimal build image whose compiler and CUDA toolkit are this machine's, mounted read-only."""
    from evalbot.build.hostimage import build_host_image

    image = build_host_image(tag, load_config(config).build.user)
    mounts = ", ".join(f'"{m}"' for m in image.toolchain_mounts)
    console.print(f"[green]imported[/] {escape(image.tag)} ({image.image_id[:19]}); use it with:\n", highlight=False)
    # A TOML snippet to paste: printed as is, not read as console markup (which would drop "[build]").
    console.print(f'[build]\nbackend = "docker"\nimage = "{image.tag}"\ntoolchain_mounts = [{mounts}]', markup=False,
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.command("build-image")(build_image)
