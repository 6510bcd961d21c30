"""What ``evalbot watch`` and ``evalbot worker`` need before the first evaluation: refused at
start-up, not failed per PR.

Without these a validator box that cannot evaluate (no GPU, no compiler, no basket model, no build
image) would fail every PR's evaluation in turn. Each problem is named, with what to do about it.
"""

from __future__ import annotations

import dataclasses

from evalbot.config import Config
from evalbot.errors import EvalbotError

NO_GPU = ("no CUDA GPU visible (CuPy finds no device, or is not installed: pip install 'evalbot[gpu]'); "
          "`evalbot watch` evaluates on this machine's GPU")


def unsandboxed_refusal(cfg: Config) -> str | None:
    """Why the config may not run the poller's builds, or None.

    The local backend compiles contributors' sources as the bot's own user with the host's files in
    reach: compiler output that quotes them (``#include "/etc/shadow"``) lands in a REJECT reason,
    which the ledger and the PR make public. Only an explicit opt-in runs it for untrusted PRs.
    """
    if cfg.build.backend != "local" or cfg.build.allow_unsandboxed:
        return None
    return (f"{cfg.source}: [build] backend = \"local\" compiles untrusted PRs unsandboxed (compiler "
            "output quoting host files would reach the public ledger); use backend = \"docker\", or set "
            "[build] allow_unsandboxed = true on a machine with nothing to leak")


def _gpu() -> str | None:
    from evalbot.evaluator import gpu_available

    return None if gpu_available() else NO_GPU


def _toolchain(cfg: Config) -> str | None:
    from evalbot.build.backend import make_backend

    try:
        # Docker: the engine answers, the image is present and nvcc runs in it. Local: nvcc runs.
        make_backend(cfg.build).toolchain()
    except EvalbotError as exc:
        return f"build toolchain ([build] backend = {cfg.build.backend}): {exc}"
    return None


def _basket(cfg: Config) -> list[str]:
    """One problem per missing member, benchmarked or correctness-only: each is resolved alone."""
    from evalbot.evaluator import basket_models, correctness_models

    alone = [(basket_models, {"models": [m]}) for m in cfg.basket.models]
    alone += [(correctness_models, {"correctness": [m]}) for m in cfg.basket.correctness]
    problems = []
    for resolve, member in alone:
        try:
            resolve(dataclasses.replace(cfg, basket=dataclasses.replace(cfg.basket, **member)))
        except EvalbotError as exc:
            problems.append(str(exc))
    return problems


def startup_problems(cfg: Config) -> list[str]:
    """Every missing piece the default evaluator needs (empty: ready): GPU, build toolchain, basket."""
    problems = [p for p in (_gpu(), _toolchain(cfg)) if p]
    return problems + _basket(cfg)


def check_startup(cfg: Config, evaluator: object) -> None:
    """Refuse to start (exit 2) on a box that cannot evaluate, rather than fail every PR in turn.

    An evaluator that brings its own ``startup_problems()`` (a list of what is missing) replaces
    the default checks, which are those of evalbot's own evaluator (GPU, build toolchain, basket).
    """
    refusal = unsandboxed_refusal(cfg)
    if refusal:
        raise EvalbotError(refusal)
    own = getattr(evaluator, "startup_problems", None)
    problems = own() if callable(own) else startup_problems(cfg)
    if problems:
        raise EvalbotError("cannot start: " + "; ".join(problems))
