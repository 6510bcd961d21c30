"""Where the GitHub token comes from. It is returned, never printed: messages name only its source."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from evalbot.config import GithubConfig
from evalbot.errors import EvalbotError


def read_token(cfg: GithubConfig, environ: Mapping[str, str] | None = None) -> str:
    """The token from ``[github] token_file`` when set, else from the ``token_env`` variable."""
    environ = os.environ if environ is None else environ
    if cfg.token_file:
        path = Path(cfg.token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise EvalbotError(f"[github] token_file {path}: cannot read: {exc.strerror}") from None
        if not token or any(ch.isspace() for ch in token):
            raise EvalbotError(f"[github] token_file {path}: expected one token on one line")
        return token
    token = environ.get(cfg.token_env, "").strip()
    if not token:
        raise EvalbotError(
            f"no GitHub token: set the environment variable {cfg.token_env} or [github] token_file"
        )
    return token
