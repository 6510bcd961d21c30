import dataclasses
from pathlib import Path

import pytest

from evalbot.config import Config, ConfigError, load_config
from evalbot.errors import EvalbotError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "validator.toml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config(None, environ={})
    assert cfg.build.backend == "docker"
    assert cfg.github.poll_interval_s == 1800.0
    assert cfg.ledger_url.startswith("sqlite:///")


def test_file_values_and_env_override(tmp_path):
    path = write(tmp_path, '[github]\nrepo = "sn74/kernels"\n[build]\nbackend = "local"\ncpus = 4\n')
    cfg = load_config(path, environ={"EVALBOT_BUILD__CPUS": "1.5", "EVALBOT_GITHUB__INCLUDE_DRAFTS": "yes"})
    assert cfg.github.repo == "sn74/kernels"
    assert cfg.build.backend == "local"
    assert cfg.build.cpus == 1.5
    assert cfg.github.include_drafts is True


def test_env_list_is_comma_separated(tmp_path):
    cfg = load_config(None, environ={"EVALBOT_BASKET__MODELS": "a.gguf, b.gguf"})
    assert cfg.basket.models == ["a.gguf", "b.gguf"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[build]\nbackend = "podman"\n', "[build] backend: must be one of docker, local"),
        ("[build]\ncpus = \"many\"\n", "[build] cpus: expected a number"),
        ("[build]\nmemory_mb = 1.5\n", "[build] memory_mb: expected an integer"),
        ("[github]\nrepoo = \"x\"\n", "[github] repoo: unknown key"),
        ("[gitlab]\nrepo = \"x\"\n", "unknown section [gitlab]"),
        ("[github]\ninclude_forks = 1\n", "[github] include_forks: expected true or false"),
        ("[github\n", "not valid TOML"),
        ("[build]\ntimeout_s = -3\n", "[build] timeout_s: must be more than 0 and at most 86400, got -3"),
        ("[build]\ntimeout_s = nan\n", "[build] timeout_s: must be a finite number, got nan"),
        ("[build]\ntimeout_s = inf\n", "[build] timeout_s: must be a finite number, got inf"),
        ("[build]\ntimeout_s = 0\n", "[build] timeout_s: must be more than 0"),
        ("[build]\ncpus = -inf\n", "[build] cpus: must be a finite number, got -inf"),
        ("[build]\nmemory_mb = 0\n", "[build] memory_mb: must be at least 64"),
        ("[build]\nmemory_mb = 9223372036854775807\n", "[build] memory_mb: must be at least 64 and at most 16,777,216"),
        ("[build]\njobs = 0\n", "[build] jobs: must be at least 1"),
        ("[github]\npoll_interval_s = nan\n", "[github] poll_interval_s: must be a finite number"),
        ("[github]\nmax_attempts = 0\n", "[github] max_attempts: must be at least 1"),
        ("[github]\nretry_backoff_s = -1.0\n", "[github] retry_backoff_s: must be at least 0"),
        ("a = " + "[" * 100_000 + "]" * 100_000 + "\n", "line 1: nested deeper than 32 levels"),
        ("[github]\n" + "x." * 100_000 + "y = 1\n", "line 2: a dotted key of more than 32 parts"),
    ],
)
def test_bad_file_names_file_section_and_key(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_bad_env_names_the_variable():
    with pytest.raises(ConfigError, match=r"EVALBOT_BUILD__PIDS.*expected an integer"):
        load_config(None, environ={"EVALBOT_BUILD__PIDS": "lots"})


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("EVALBOT_BUILD__TIMEOUT_S", "nan", "([build] timeout_s): must be a finite number, got nan"),
        ("EVALBOT_BUILD__TIMEOUT_S", "NaN", "([build] timeout_s): must be a finite number, got nan"),
        ("EVALBOT_BUILD__FETCH_TIMEOUT_S", "infinity", "([build] fetch_timeout_s): must be a finite number"),
        ("EVALBOT_BUILD__CPUS", "0", "([build] cpus): must be more than 0"),
        ("EVALBOT_GITHUB__RETRIES", "-1", "([github] retries): must be at least 0"),
        ("EVALBOT_BUILD__LOG_LIMIT_BYTES", "1e9", "([build] log_limit_bytes): expected an integer"),
    ],
)
def test_env_numbers_are_checked_like_the_file(var, value, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={var: value})
    assert str(info.value).startswith(f"environment variable {var} {needle}")


def test_every_number_has_a_range_its_default_satisfies():
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        for spec in dataclasses.fields(section.default_factory()):  # type: ignore[misc]
            if spec.type in ("int", "float"):
                assert "range" in spec.metadata, f"[{section.name}] {spec.name} has no range"
                low, high, above = spec.metadata["range"]
                default = spec.default
                assert (low < default if above else low <= default) and default <= high, spec.name


def test_a_finite_value_at_a_bound_is_accepted():
    cfg = load_config(None, environ={"EVALBOT_BUILD__MEMORY_MB": "64", "EVALBOT_GITHUB__RETRIES": "0",
                                     "EVALBOT_BUILD__TIMEOUT_S": "86400"})
    assert (cfg.build.memory_mb, cfg.github.retries, cfg.build.timeout_s) == (64, 0, 86400.0)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_build_sandbox_settings_from_file_and_env(tmp_path):
    path = write(tmp_path, '[build]\nuser = "1000:1000"\ntoolchain_mounts = ["/usr"]\njobs = 4\n')
    cfg = load_config(path, environ={"EVALBOT_BUILD__TOOLCHAIN_MOUNTS": "/usr, /opt/cuda"})
    assert cfg.build.user == "1000:1000"
    assert cfg.build.toolchain_mounts == ["/usr", "/opt/cuda"]
    assert cfg.build.jobs == 4
    defaults = load_config(None, environ={})
    assert defaults.build.user == "65534:65534" and defaults.build.toolchain_mounts == []
    assert defaults.build.fetch_timeout_s == 300.0


def test_basket_set_chooses_the_models_and_explicit_models_win() -> None:
    from evalbot.config import BASKET_SETS
    from reference_runtime import basket, production

    assert set(BASKET_SETS["production"]) == set(production.SPECS)
    assert set(BASKET_SETS["tiny"]) == set(basket.SPECS)
    assert load_config(None, environ={}).basket.models == list(BASKET_SETS["production"])
    assert load_config(None, environ={"EVALBOT_BASKET__SET": "tiny"}).basket.models == list(BASKET_SETS["tiny"])
    chosen = load_config(None, environ={"EVALBOT_BASKET__SET": "tiny", "EVALBOT_BASKET__MODELS": "x.gguf"})
    assert chosen.basket.models == ["x.gguf"]
    with pytest.raises(ConfigError, match=r"\[basket\] set.*production, tiny"):
        load_config(None, environ={"EVALBOT_BASKET__SET": "huge"})


def test_correctness_members_default_to_the_real_gemma3_and_can_be_emptied(tmp_path) -> None:
    from evalbot.evaluator import correctness_models

    assert load_config(None, environ={}).basket.correctness == ["gemma3-270m"]
    assert load_config(None, environ={"EVALBOT_BASKET__CORRECTNESS": ""}).basket.correctness == []
    cfg = load_config(write(tmp_path, "[basket]\ncorrectness = []\n"), environ={})
    assert cfg.basket.correctness == [] and correctness_models(cfg) == {}
    real = tmp_path / "gemma3-270m.Q4_K_M.gguf"
    real.write_bytes(b"GGUF")
    given = load_config(None, environ={"EVALBOT_BASKET__CORRECTNESS": str(real)})
    assert correctness_models(given) == {"gemma3-270m": real}
    # A member benchmarked already is not gated twice.
    both = load_config(None, environ={"EVALBOT_BASKET__MODELS": str(real), "EVALBOT_BASKET__CORRECTNESS": str(real)})
    assert correctness_models(both) == {}
    from reference_runtime import basket

    if basket.real_model_path() is not None:  # the package's file is named otherwise: the key is the name
        assert list(correctness_models(load_config(None, environ={}))) == ["gemma3-270m"]
    missing = load_config(None, environ={"EVALBOT_BASKET__CORRECTNESS": str(tmp_path / "gone.gguf")})
    with pytest.raises(EvalbotError, match=r"\[basket\] correctness\): no such GGUF file"):
        correctness_models(missing)


def test_an_unbuilt_production_basket_names_the_command(tmp_path) -> None:
    from evalbot.evaluator import basket_models

    cfg = load_config(None, environ={"EVALBOT_PATHS__DATA_DIR": str(tmp_path)})
    with pytest.raises(EvalbotError, match="evalbot models build --set production"):
        basket_models(cfg)


def test_fleet_section_defaults_to_the_embedded_mode_and_reads_file_and_env(tmp_path) -> None:
    cfg = load_config(None, environ={})
    assert cfg.fleet.url == "" and cfg.gpu_classes == ["unspecified"]
    path = write(tmp_path, '[ledger]\ngpu_class = "H100-SXM"\n[fleet]\nurl = "postgresql://db/fleet"\n'
                           'stalled_after_s = 90\n')
    cfg = load_config(path, environ={"EVALBOT_FLEET__GPU_CLASSES": "H100-SXM,H200"})
    assert cfg.fleet.url == "postgresql://db/fleet" and cfg.fleet.stalled_after_s == 90.0
    assert cfg.gpu_classes == ["H100-SXM", "H200"]
    assert load_config(write(tmp_path, '[ledger]\ngpu_class = "A"\n'), environ={}).gpu_classes == ["A"]
    with pytest.raises(ConfigError, match=r"\[fleet\] heartbeat_s: must be more than 0"):
        load_config(write(tmp_path, "[fleet]\nheartbeat_s = 0\n"), environ={})


def test_startup_names_every_missing_basket_member_speed_and_correctness(tmp_path) -> None:
    from evalbot.watch_checks import startup_problems

    cfg = load_config(None, environ={"EVALBOT_PATHS__DATA_DIR": str(tmp_path), "EVALBOT_BASKET__SET": "tiny",
                                     "EVALBOT_BASKET__CORRECTNESS": str(tmp_path / "real.gguf")})
    problems = "\n".join(startup_problems(cfg))
    assert "qwen3moe-tiny is not built" in problems and "gemma4-tiny is not built" in problems
    assert "real.gguf' (<defaults>: [basket] correctness): no such GGUF file" in problems
