"""Where evalbot keeps data (models, ledger) and caches (reference logits, builds)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "evalbot"


def data_dir() -> Path:
    return Path(os.environ.get("EVALBOT_DATA_DIR") or platformdirs.user_data_dir(APP))


def cache_dir() -> Path:
    return Path(os.environ.get("EVALBOT_CACHE_DIR") or platformdirs.user_cache_dir(APP))
