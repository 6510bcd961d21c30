from pathlib import Path

import pytest

from evalbot.config import ConfigError, load_config


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
        ("[build]\ntimeout_s = -3\n", "[build] timeout_s: must not be negative"),
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
