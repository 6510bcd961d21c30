"""Validator configuration: one TOML file, then ``EVALBOT_<SECTION>__<KEY>`` environment overrides.

Every section is a frozen dataclass; the loader checks each value's type, allowed choices and, for
numbers, that they are finite and within the field's range (``_range``; by default not negative),
and rejects unknown keys, so a typo in ``validator.toml`` is an error naming the file, section and key
instead of a silently ignored setting. Environment values are checked the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalbot import bounded_toml, paths
from evalbot.errors import EvalbotError

ENV_PREFIX = "EVALBOT_"


class ConfigError(EvalbotError):
    pass


def _choices(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


def _range(low: float, high: float, *, above: bool = False) -> dict[str, Any]:
    """Allowed values ``low ≤ v ≤ high`` (``low < v`` when ``above``: zero would mean "never" or "no limit")."""
    return {"range": (low, high, above)}


DAY_S = 86400.0


@dataclass(frozen=True)
class GithubConfig:
    repo: str = ""
    base_branch: str = "main"
    api_url: str = "https://api.github.com"
    token_env: str = "GITHUB_TOKEN"
    token_file: str = ""
    poll_interval_s: float = field(default=1800.0, metadata=_range(0, 7 * DAY_S, above=True))
    include_drafts: bool = False
    include_forks: bool = True
    # Transport: per-request timeout, retries of idempotent requests (5xx, 429, timeouts, secondary
    # rate limits) with exponential backoff, and PyGithub's spacing between requests / writes.
    timeout_s: int = field(default=15, metadata=_range(1, 3600))  # PyGithub takes whole seconds
    retries: int = field(default=6, metadata=_range(0, 100))
    backoff_s: float = field(default=2.0, metadata=_range(0, 3600))
    request_interval_s: float = field(default=0.25, metadata=_range(0, 3600))
    write_interval_s: float = field(default=1.0, metadata=_range(0, 3600))
    # Pause before the primary rate limit drops below this many remaining requests.
    rate_limit_reserve: int = field(default=50, metadata=_range(0, 100_000))
    status_context: str = "evalbot"
    # Evaluations of one commit that may die (crash, killed bot) before it is marked failed.
    max_attempts: int = field(default=3, metadata=_range(1, 100))
    # Delay before retrying a transient evaluation failure; doubles per attempt (capped at 15 min).
    retry_backoff_s: float = field(default=60.0, metadata=_range(0, DAY_S))


@dataclass(frozen=True)
class LedgerConfig:
    url: str = ""
    signing_key: str = ""
    gpu_class: str = ""


@dataclass(frozen=True)
class BuildConfig:
    backend: str = field(default="docker", metadata=_choices("docker", "local"))
    # The local backend has no sandbox: `evalbot watch` runs it on untrusted PRs only when this is true.
    allow_unsandboxed: bool = False
    image: str = "nvidia/cuda:13.0.1-devel-ubuntu24.04"
    cpus: float = field(default=2.0, metadata=_range(0, 1024, above=True))
    # Below these floors nvcc cannot run at all, and every build would read as the contributor's fault.
    memory_mb: int = field(default=4096, metadata=_range(64, 2**24))
    pids: int = field(default=256, metadata=_range(32, 2**22))
    timeout_s: float = field(default=300.0, metadata=_range(0, DAY_S, above=True))
    log_limit_bytes: int = field(default=65536, metadata=_range(1024, 2**30))
    # uid:gid the compiler runs as inside the container; never root.
    user: str = "65534:65534"
    # Host directories mounted read-only at the same path in the container, for images that carry no
    # CUDA toolkit of their own (see `evalbot build-image`); empty for the nvidia/cuda images.
    toolchain_mounts: list[str] = field(default_factory=list)
    # Slots compiled at once, each within the cpus / memory limits above.
    jobs: int = field(default=2, metadata=_range(1, 256))
    fetch_timeout_s: float = field(default=300.0, metadata=_range(0, DAY_S, above=True))


# The pinned basket sets (reference_runtime.production and reference_runtime.basket generate them).
BASKET_SETS: dict[str, tuple[str, ...]] = {
    "production": ("qwen3moe-30b-a3b", "gemma4-26b-a4b"),
    "tiny": ("qwen3moe-tiny", "gemma4-tiny"),
}


@dataclass(frozen=True)
class BasketConfig:
    # production: the real architectures' full dimensions, what a GPU validator measures; tiny: the
    # same architectures shrunk, for CPU CI and quick local runs.
    set: str = field(default="production", metadata=_choices(*BASKET_SETS))
    # Empty: the set's models. Otherwise basket names, "gemma3-270m" or paths to GGUF files.
    models: list[str] = field(default_factory=list)
    # Correctness-only members, named like `models`: their shapes join the kernel gates and they go
    # through the teacher-forced end-to-end gates first, but are never timed or scored. The real
    # Gemma 3 270M brings what generated weights lack: real activation statistics (outlier channels,
    # large attention logits). Empty: none.
    correctness: list[str] = field(default_factory=lambda: ["gemma3-270m"])
    holdout_seed_env: str = "EVALBOT_HOLDOUT_SEED"

    def __post_init__(self) -> None:
        if not self.models and self.set in BASKET_SETS:
            object.__setattr__(self, "models", list(BASKET_SETS[self.set]))


@dataclass(frozen=True)
class FleetConfig:
    # Empty: the embedded default (`evalbot watch` evaluates in-process, its queue in the ledger's
    # database). A PostgreSQL URL: the fleet's jobs live there (procrastinate); `evalbot watch`
    # enqueues and publishes, `evalbot worker` processes evaluate (docs/poller.md, "Fleet").
    url: str = ""
    # The GPU classes each commit is evaluated on, one queue each; empty: [ledger] gpu_class alone.
    # The first one's verdict sets the PR's label.
    gpu_classes: list[str] = field(default_factory=list)
    # Workers beat every heartbeat_s; a worker silent for stalled_after_s is taken for dead and its
    # job is retried on another.
    heartbeat_s: float = field(default=10.0, metadata=_range(0, 3600, above=True))
    stalled_after_s: float = field(default=60.0, metadata=_range(0, DAY_S, above=True))
    # How often a worker looks for dead workers' jobs, and whether its own job was cancelled.
    check_interval_s: float = field(default=5.0, metadata=_range(0, 3600, above=True))
    # A queued PR's comment (its queue position) is refreshed at most this often.
    position_refresh_s: float = field(default=300.0, metadata=_range(0, DAY_S))


@dataclass(frozen=True)
class PathsConfig:
    data_dir: str = ""
    cache_dir: str = ""


@dataclass(frozen=True)
class Config:
    github: GithubConfig = field(default_factory=GithubConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    basket: BasketConfig = field(default_factory=BasketConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    source: str = "<defaults>"

    @property
    def data_dir(self) -> Path:
        return Path(self.paths.data_dir).expanduser() if self.paths.data_dir else paths.data_dir()

    @property
    def cache_dir(self) -> Path:
        return Path(self.paths.cache_dir).expanduser() if self.paths.cache_dir else paths.cache_dir()

    @property
    def gpu_classes(self) -> list[str]:
        """The GPU classes jobs are queued for (fleet mode)."""
        return list(self.fleet.gpu_classes) or [self.ledger.gpu_class or "unspecified"]

    @property
    def ledger_url(self) -> str:
        url = self.ledger.url or str(self.data_dir / "ledger.sqlite")
        return url if "://" in url else f"sqlite:///{Path(url).expanduser()}"


_SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(Config).items() if name != "source"
}


def _coerce(value: Any, hint: Any, where: str, from_env: bool) -> Any:
    """Check (and, for environment strings, parse) one value against its annotation."""
    if typing.get_origin(hint) is list:
        (item_hint,) = typing.get_args(hint)
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_hint, where, from_env) for v in value]
    if hint is bool:
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        expected = f"{where}: expected {'an integer' if hint is int else 'a number'}, got {value!r}"
        if from_env and isinstance(value, str):
            try:
                value = hint(value)
            except ValueError:
                raise ConfigError(expected) from None
        wrong_kind = isinstance(value, bool) or not isinstance(value, int | float)
        if wrong_kind or (hint is int and not isinstance(value, int)):
            raise ConfigError(expected)
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {hint!r}")  # a programming error, not user input


def _check_range(value: float, allowed: tuple[float, float, bool], where: str) -> None:
    # NaN compares false with everything, so it would pass any bound: a NaN time limit is no limit.
    if not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    low, high, above = allowed
    if value < low or (above and value == low) or value > high:
        lower = f"more than {_show(low)}" if above else f"at least {_show(low)}"
        upper = f" and at most {_show(high)}" if math.isfinite(high) else ""
        raise ConfigError(f"{where}: must be {lower}{upper}, got {value!r}")


def _show(bound: float) -> str:
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


def _build_section(name: str, raw: dict[str, Any], where_of: dict[str, str], from_env: set[str]) -> Any:
    cls = _SECTIONS[name]
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = where_of[key]
        if key not in known:
            raise ConfigError(f"{where}: unknown key (known keys in [{name}]: {', '.join(sorted(known))})")
        parsed = _coerce(value, hints[key], where, key in from_env)
        choices = known[key].metadata.get("choices")
        if choices and parsed not in choices:
            raise ConfigError(f"{where}: must be one of {', '.join(choices)}, got {parsed!r}")
        if isinstance(parsed, int | float) and not isinstance(parsed, bool):
            _check_range(parsed, known[key].metadata.get("range", (0, math.inf, False)), where)
        values[key] = parsed
    return cls(**values)


def load_config(path: str | Path | None = None, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (optional), apply ``EVALBOT_SECTION__KEY`` overrides, and validate everything."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        file = Path(path)
        source = str(file)
        try:
            raw = bounded_toml.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{file}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read config file: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except bounded_toml.NestingError as exc:
            raise ConfigError(f"{file}: {exc}") from None

    sections: dict[str, dict[str, Any]] = {}
    where_of: dict[str, dict[str, str]] = {}
    from_env: dict[str, set[str]] = {name: set() for name in _SECTIONS}
    for name, body in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        sections[name] = dict(body)
        where_of[name] = {key: f"{source}: [{name}] {key}" for key in body}

    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, _, key = var[len(ENV_PREFIX):].partition("__")
        section, key = section.lower(), key.lower()
        if section not in _SECTIONS:
            raise ConfigError(f"environment variable {var}: unknown section {section!r}")
        sections.setdefault(section, {})[key] = value
        where_of.setdefault(section, {})[key] = f"environment variable {var} ([{section}] {key})"
        from_env[section].add(key)

    built = {
        name: _build_section(name, sections.get(name, {}), where_of.get(name, {}), from_env[name])
        for name in _SECTIONS
    }
    return Config(**built, source=source)

