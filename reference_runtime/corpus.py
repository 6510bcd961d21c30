"""The frozen corpus: one fixed English text, stored per tokenizer as token ids pinned by SHA-256.

Models without a tokenizer (the synthetic basket) read the text's UTF-8 bytes as token ids; real models
read it through llama.cpp's tokenizer, once, when the token file is made. Token files live beside the
text and carry the text's SHA-256 too, so editing either is detected on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reference_runtime.errors import ReferenceRuntimeError

if TYPE_CHECKING:
    from reference_runtime.gguf_model import GGUFModel

BYTE_TOKENIZER = "bytes"


class CorpusError(ReferenceRuntimeError):
    pass


def _dir() -> Path:
    return Path(str(resources.files("reference_runtime").joinpath("corpus")))


def text() -> str:
    return (_dir() / "corpus.txt").read_text(encoding="utf-8")


def text_sha256() -> str:
    return hashlib.sha256(text().encode("utf-8")).hexdigest()


def tokens_sha256(tokens: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(tokens, dtype="<i4").tobytes()).hexdigest()


@dataclass(frozen=True)
class Corpus:
    tokenizer: str
    tokens: np.ndarray  # int32
    sha256: str

    def __len__(self) -> int:
        return len(self.tokens)


def byte_tokens() -> np.ndarray:
    return np.frombuffer(text().encode("utf-8"), dtype=np.uint8).astype(np.int32)


def token_file(tokenizer: str) -> Path:
    return _dir() / f"{tokenizer}.tokens.json"


def load(tokenizer: str, path: Path | None = None) -> Corpus:
    """The stored token ids for ``tokenizer``, after checking both pins."""
    path = path or token_file(tokenizer)
    try:
        doc = json.loads(path.read_text())
        tokens = np.asarray(doc["tokens"], dtype=np.int32)
        pinned, pinned_text = str(doc["sha256"]), str(doc["text_sha256"])
    except FileNotFoundError:
        raise CorpusError(f"{path}: no frozen corpus for tokenizer {tokenizer!r}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{path}: not a corpus token file ({exc})") from None
    if (actual := tokens_sha256(tokens)) != pinned:
        raise CorpusError(f"{path}: token ids hash to {actual[:16]}…, but the file pins {pinned[:16]}…")
    if pinned_text != text_sha256():
        raise CorpusError(f"{path}: made from a corpus text with SHA-256 {pinned_text[:16]}…, "
                          f"but corpus.txt now hashes to {text_sha256()[:16]}…")
    return Corpus(tokenizer, tokens, pinned)


def save(tokenizer: str, tokens: np.ndarray, path: Path | None = None) -> Path:
    path = path or token_file(tokenizer)
    tokens = np.asarray(tokens, dtype=np.int32)
    doc = {
        "tokenizer": tokenizer,
        "text_sha256": text_sha256(),
        "sha256": tokens_sha256(tokens),
        "n_tokens": len(tokens),
        "tokens": tokens.tolist(),
    }
    path.write_text(json.dumps(doc) + "\n")
    return path


def tokenizer_of(model: GGUFModel) -> str:
    """The corpus a model reads: byte ids without a tokenizer, else its architecture's token file."""
    kind = model.get("tokenizer.ggml.model", "none")
    return BYTE_TOKENIZER if kind in ("none", "no_vocab") else model.arch


def for_model(model: GGUFModel) -> Corpus:
    return load(tokenizer_of(model))
