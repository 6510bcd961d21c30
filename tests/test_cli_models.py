"""Bad input to the model commands: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from reference_runtime import corpus
from tests.micro_models import write_micro


def run(*args: str, env_extra: dict[str, str] | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if tmp is not None:
        env["EVALBOT_CACHE_DIR"] = str(tmp / "cache")
        env["EVALBOT_DATA_DIR"] = str(tmp / "data")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "evalbot", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    joined = " ".join(line.strip() for line in lines)
    assert joined.startswith("error:"), result.stderr
    for needle in needles:
        assert needle in joined, (needle, result.stderr)


def test_truncated_gguf(tmp_path):
    src = write_micro("qwen3moe", tmp_path)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert_one_line_error(run("models", "inspect", str(cut)), "cut.gguf", "truncated")
    assert_one_line_error(run("reference", str(cut), tmp=tmp_path), "cut.gguf", "truncated")


def test_unknown_architecture(tmp_path):
    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_one_line_error(run("models", "inspect", str(path)), "mamba.gguf", "unsupported architecture 'mamba'")


@pytest.mark.parametrize(("arch", "missing"), [("qwen3moe", "blk.1.attn_q.weight"),
                                                ("gemma4", "blk.0.ffn_gate_inp.scale")])
def test_missing_tensor(tmp_path, arch, missing):
    path = write_micro(arch, tmp_path, drop=(missing,))
    assert_one_line_error(run("models", "inspect", str(path)), path.name, "missing tensor", missing)


def test_not_a_file(tmp_path):
    assert_one_line_error(run("models", "inspect", str(tmp_path / "nope.gguf")), "nope.gguf")


def test_corpus_whose_sha_does_not_match(tmp_path):
    model = write_micro("qwen3moe", tmp_path)
    doc = json.loads(corpus.token_file(corpus.BYTE_TOKENIZER).read_text())
    doc["tokens"][5] = (doc["tokens"][5] + 1) % 64  # the pinned sha256 no longer matches
    bad = tmp_path / "bad.tokens.json"
    bad.write_text(json.dumps(doc))
    assert_one_line_error(run("reference", str(model), "--corpus", str(bad), tmp=tmp_path),
                          "bad.tokens.json", "pins")


def test_corpus_tokens_outside_the_model_vocabulary(tmp_path):
    model = write_micro("qwen3moe", tmp_path)  # vocabulary of 64: the byte corpus does not fit
    result = run("reference", str(model), tmp=tmp_path)
    assert_one_line_error(result, "token ids must lie in [0, 64)")


def test_reference_runs_then_hits_the_cache(tmp_path):
    model = write_micro("gemma4", tmp_path)
    tokens = corpus.byte_tokens() % 64
    token_file = corpus.save("micro", tokens, tmp_path / "micro.tokens.json")
    first = run("reference", str(model), "--corpus", str(token_file), tmp=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "computed in" in first.stdout
    second = run("reference", str(model), "--corpus", str(token_file), tmp=tmp_path)
    assert second.returncode == 0 and "cache hit" in second.stdout
    ppl = [line.split("ppl ")[1].split()[0] for line in (first.stdout, second.stdout)]
    assert ppl[0] == ppl[1]


def test_bad_config_names_the_file_and_key(tmp_path):
    cfg = tmp_path / "validator.toml"
    cfg.write_text('[build]\nbackend = "vm"\n')
    assert_one_line_error(run("models", "list", "--config", str(cfg)), "validator.toml", "[build] backend")


def test_models_verify_fails_on_missing_and_altered_files(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "qwen3moe-tiny.Q4_K_M.gguf").write_bytes(b"GGUF not really")
    result = run("models", "verify", "--set", "tiny", "--dir", str(models))
    assert result.returncode == 1
    assert "FAIL qwen3moe-tiny: sha256" in result.stdout
    assert "FAIL gemma4-tiny: missing" in result.stdout
    production = run("models", "verify", "--dir", str(models))  # the default set
    assert production.returncode == 1
    assert "FAIL qwen3moe-30b-a3b" in production.stdout and "found missing" in production.stdout


def test_reference_reports_each_layer_as_it_goes(tmp_path):
    """`evalbot reference` draws its progress bar from these calls: one per layer, in order."""
    from reference_runtime.arch import read_config
    from reference_runtime.gguf_model import GGUFModel
    from reference_runtime.reference_cache import reference_logprobs

    model_path = write_micro("gemma4", tmp_path)
    tokens = corpus.byte_tokens() % 64
    seen: list[tuple[int, int]] = []
    with GGUFModel.open(model_path) as model:
        n_layer = read_config(model).n_layer
        text = corpus.load(corpus.tokenizer_of(model), corpus.save("micro", tokens, tmp_path / "t.json"))
        reference_logprobs(model, text, tmp_path / "ref", on_layer=lambda done, total: seen.append((done, total)))
        assert seen == [(i, n_layer) for i in range(1, n_layer + 1)] and n_layer > 1
        seen.clear()
        assert reference_logprobs(model, text, tmp_path / "ref", on_layer=lambda *a: seen.append(a)).hit
    assert seen == []  # a cache hit computes nothing
