"""``evalbot models`` and ``evalbot reference``: the basket models and the fp64 oracle over them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from evalbot.config import load_config

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The basket models: build, list, verify, inspect.")
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="validator TOML config")]
DirOpt = Annotated[Path | None, typer.Option("--dir", help="models directory (default: <data dir>/models)")]


def models_dir(config: Path | None, directory: Path | None) -> Path:
    return directory or load_config(config).data_dir / "models"


SetOpt = Annotated[str | None, typer.Option("--set", help="basket set: production or tiny (default: [basket] set)")]


def _basket_set(config: Path | None, chosen: str | None) -> str:
    from evalbot.config import BASKET_SETS

    name = chosen or load_config(config).basket.set
    if name not in BASKET_SETS:
        console.print(f"error: unknown basket set {name!r} (known: {', '.join(BASKET_SETS)})", markup=False)
        raise typer.Exit(2)
    return name


@app.command()
def build(config: ConfigOpt = None, directory: DirOpt = None, set_: SetOpt = None,
          model: Annotated[list[str] | None, typer.Option(help="only this basket model")] = None) -> None:
    """Generate the basket models (deterministic) and check them against their pins.

    production: blocks drawn directly, on the GPU when there is one (seconds) or the CPU (minutes);
    tiny: float32 weights quantized by llama.cpp."""
    from reference_runtime import basket, production

    target = models_dir(config, directory)
    chosen = _basket_set(config, set_)
    with console.status(f"building the {chosen} basket") as status:
        if chosen == "production":
            made = production.build(target, model, on_step=lambda msg: status.update(msg))
            built = {key: g.path for key, g in made.items()}
            for key, g in made.items():
                console.print(f"{key}: {g.nbytes / 1e9:.2f} GB in {g.seconds:.0f} s on {g.device}", markup=False)
        else:
            built = basket.build(target, model, on_step=lambda msg: status.update(msg))
    for key, path in built.items():
        console.print(f"[green]built[/] {escape(key)}: {escape(str(path))}")


@app.command("list")
def list_(config: ConfigOpt = None, directory: DirOpt = None) -> None:
    """Show the basket models of both sets, their pins and whether the file on disk matches."""
    from reference_runtime import basket, production

    target = models_dir(config, directory)
    table = Table(title="basket models")
    for col in ("set", "model", "arch", "experts", "pinned", "status", "path"):
        table.add_column(col)
    for key, path, problems in production.status(target, hash_tensors=False):
        spec = production.SPECS[key]
        status = "[green]ok" if not problems else "[yellow]missing" if not path.is_file() else "[red]MISMATCH"
        table.add_row("production", key, spec.arch, f"{spec.n_expert_used}/{spec.n_expert}",
                      f"{len(production.pins()[key]['tensors'])} tensors", status, Text(str(path)))
    for st in basket.verify(target):
        spec = basket.SPECS.get(st.key)
        arch, experts = (spec.arch, f"{spec.n_expert_used}/{spec.n_expert}") if spec else ("gemma3", "dense")
        status = "[green]ok" if st.ok else "[yellow]missing" if st.actual is None else "[red]MISMATCH"
        table.add_row("tiny" if spec else "real", st.key, arch, experts, st.pinned[:16] + "…", status,
                      Text(str(st.path)))
    console.print(table)


@app.command()
def verify(config: ConfigOpt = None, directory: DirOpt = None, set_: SetOpt = None) -> None:
    """Re-hash every model of the set (production: tensor by tensor, in parallel); exit 1 if any is
    missing or differs from its pins, naming what differs."""
    from reference_runtime import basket, production

    target = models_dir(config, directory)
    bad = 0
    if _basket_set(config, set_) == "production":
        for key, path, problems in production.status(target):
            if not problems:
                console.print(f"[green]ok[/] {key}: every tensor matches its pin")
                continue
            bad += 1
            shown = "; ".join(str(p) for p in problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5
                                                                else "")
            console.print(f"FAIL {key} ({path}): {shown}; `evalbot models build --set production` regenerates it",
                          markup=False, soft_wrap=True)
    else:
        for st in basket.verify(target):
            if st.ok:
                console.print(f"[green]ok[/] {st.key} {st.actual}")
            else:
                bad += 1
                found = "missing" if st.actual is None else f"sha256 {st.actual}"
                console.print(f"[red]FAIL[/] {st.key}: {found}, pinned {st.pinned} ({escape(str(st.path))})")
    if bad:
        raise typer.Exit(1)


@app.command()
def inspect(path: Path) -> None:
    """Read a GGUF file's architecture the way the reference will, and show it per layer."""
    from reference_runtime.arch import read_config
    from reference_runtime.gguf_model import GGUFModel

    with GGUFModel.open(path) as model:
        cfg = read_config(model)
        console.print(f"{escape(str(path))}: [bold]{cfg.arch}[/], vocab {cfg.n_vocab}, n_embd {cfg.n_embd}, "
                      f"{cfg.n_layer} layers, experts {cfg.n_expert_used}/{cfg.n_expert}, "
                      f"sliding window {cfg.n_swa or '-'}, softcap {cfg.final_softcap or '-'}")
        table = Table()
        for col in ("layer", "attention", "heads/kv", "head_dim", "rot", "rope base", "ffn"):
            table.add_column(col, justify="right")
        for layer in cfg.layers:
            ffn = " + ".join(x for x in (f"dense {layer.n_ff}" if layer.n_ff else "",
                                         f"moe {layer.n_ff_exp}" if layer.is_moe else "") if x)
            table.add_row(str(layer.index), "sliding" if layer.is_swa else "global",
                          f"{layer.n_head}/{layer.n_head_kv}", str(layer.head_dim), str(layer.n_rot),
                          f"{layer.rope_base:g}", ffn)
        console.print(table)


def reference(
    path: Path,
    config: ConfigOpt = None,
    recompute: Annotated[bool, typer.Option(help="ignore the cache")] = False,
    corpus_file: Annotated[Path | None, typer.Option("--corpus", help="a corpus token file to use instead")] = None,
) -> None:
    """Run (or load from cache) the fp64 reference over the frozen corpus and report its perplexity."""
    import numpy as np

    from reference_runtime import corpus as corpus_mod
    from reference_runtime.gguf_model import GGUFModel
    from reference_runtime.reference_cache import reference_logprobs

    cfg = load_config(config)
    with GGUFModel.open(path) as model:
        tokenizer = corpus_mod.tokenizer_of(model)
        corpus = corpus_mod.load(tokenizer, corpus_file)
        # A bar per layer with elapsed time: the CPU forward of a basket model takes tens of seconds.
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("layers"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task(f"fp64 reference over {len(corpus)} tokens", total=None)

            def on_layer(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = reference_logprobs(model, corpus, cfg.cache_dir / "reference", recompute=recompute,
                                        on_layer=on_layer)
    lp = result.logprobs
    targets = corpus.tokens[1:]
    nll = -float(np.mean(lp[np.arange(len(targets)), targets]))
    console.print(
        f"{path.name}: {len(corpus)} positions, corpus {corpus.sha256[:16]}…, ppl {np.exp(nll):.4f} "
        f"({'cache hit' if result.hit else f'computed in {result.seconds:.1f} s'}; {result.path})",
        markup=False,
    )

