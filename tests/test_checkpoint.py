"""ledger.checkpoint: the C2SP checkpoint / signed-note format, against published vectors and tampering.

The PeterNeumann note and keys are the example of Go's golang.org/x/mod/sumdb/note (the origin of
the signed-note format); the TEST and remora verifier keys are from transparency-dev/formats'
note/note_cosigv1_test.go (types 0x01 and 0x04).
"""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import checkpoint as cp
from ledger.checkpoint import Checkpoint, CheckpointError
from ledger.keys import Signer

GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]  # PRIVATE+KEY+PeterNeumann+c74f20a3+…
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
ROOT = hashlib.sha256(b"root").digest()


def signer(seed: bytes = GO_SEED) -> Signer:
    return Signer.from_private_key(Ed25519PrivateKey.from_private_bytes(seed))


def test_the_go_note_vector_is_reproduced_byte_for_byte() -> None:
    name, sig_type, public = cp.parse_vkey(GO_VKEY)
    peter = signer()
    assert (name, sig_type, public.hex()) == ("PeterNeumann", cp.ED25519, peter.public_hex)
    assert cp.vkey("PeterNeumann", public) == GO_VKEY
    signature = peter.private_key.sign(GO_TEXT.encode())
    blob = base64.b64encode(cp.key_id("PeterNeumann", public) + signature).decode()
    assert blob == GO_SIG


@pytest.mark.parametrize(
    ("vkey", "sig_type"),
    [
        ("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6", cp.ED25519),
        ("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2", cp.COSIGNATURE_V1),
    ],
)
def test_published_verifier_keys_parse_with_their_key_ids(vkey: str, sig_type: int) -> None:
    name, found_type, public = cp.parse_vkey(vkey)
    assert found_type == sig_type and cp.vkey(name, public, sig_type) == vkey


def test_key_id_is_the_signed_note_formula() -> None:
    public = bytes(range(32))
    expected = hashlib.sha256(b"example.com/log" + b"\x0a" + b"\x01" + public).digest()[:4]
    assert cp.key_id("example.com/log", public) == expected
    assert cp.key_id("example.com/log", public, 0x04) == hashlib.sha256(b"example.com/log\n\x04" + public).digest()[:4]


def test_sign_format_parse_verify_round_trip() -> None:
    log = signer()
    signed = cp.sign(Checkpoint("example.com/log", 1042, ROOT), log)
    text = signed.text()
    lines = text.split("\n")
    assert lines[:4] == ["example.com/log", "1042", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith("\u2014 example.com/log ") and lines[5] == ""
    parsed = cp.parse(text)
    assert parsed == signed
    assert cp.verify(parsed, bytes.fromhex(log.public_hex)) == Checkpoint("example.com/log", 1042, ROOT)


def _resigned_text(text: str, old: str, new: str) -> str:
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("\n1042\n", "\n1043\n"), "bad signature"),
        (lambda t: t.replace(base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode()), "bad signature"),
        (lambda t: t.replace("example.com/log\n", "example.com/other\n", 1), "no signature by key example.com/other"),
    ],
)
def test_a_changed_checkpoint_does_not_verify(change: object, message: str) -> None:
    log = signer()
    text = cp.sign(Checkpoint("example.com/log", 1042, ROOT), log).text()
    changed = cp.parse(change(text))  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=message):
        cp.verify(changed, bytes.fromhex(log.public_hex))


def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    mallory = signer(bytes(32))
    signed = cp.sign(Checkpoint("example.com/log", 5, ROOT), mallory)
    with pytest.raises(CheckpointError, match=r"no signature by key example\.com/log .*re-signed with another key"):
        cp.verify(signed, bytes.fromhex(signer().public_hex))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.com/log\n5\n", "no blank line"),
        ("example.com/log\n5\n\n\u2014 a AAAAAAA=\n", "needs origin, size, root"),
        ("example.com/log\n05\nAAAA\n\n\u2014 a AAAAAAA=\n", "not a decimal number"),
        ("example.com/log\n-5\nAAAA\n\n\u2014 a AAAAAAA=\n", "not a decimal number"),
        ("example.com/log\n5\nAAAA\n\n\u2014 a AAAAAAA=\n", "not 32"),
        ("example.com/log\n5\n!!\n\n\u2014 a AAAAAAA=\n", "not base64"),
        (f"o\n5\n{base64.b64encode(ROOT).decode()}\n\n- a AAAAAAA=\n", "does not start with"),
        (f"o\n5\n{base64.b64encode(ROOT).decode()}\n\n\u2014 a AAAAAAA=", "does not end with a newline"),
        (f"o\n5\n{base64.b64encode(ROOT).decode()}\n\n\u2014 a+b AAAAAAA=\n", "without spaces or"),
        (f"o\n5\n{base64.b64encode(ROOT).decode()}\x07\n\n\u2014 a AAAAAAA=\n", "control characters"),
    ],
)
def test_malformed_checkpoints_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        cp.parse(text)


def test_cosignature_message_and_round_trip() -> None:
    log, witness = signer(), signer(b"\x07" * 32)
    signed = cp.sign(Checkpoint("example.com/log", 7, ROOT), log)
    cosigned = cp.cosign(signed, witness, "witness.example/w1", 1679315147)
    parsed = cp.parse(cosigned.text())
    assert cp.verify(parsed, bytes.fromhex(log.public_hex)).size == 7
    public = bytes.fromhex(witness.public_hex)
    assert cp.verify_cosignature(parsed, public, "witness.example/w1") == 1679315147
    line = parsed.signatures[-1]
    assert line.key_id == hashlib.sha256(b"witness.example/w1\n\x04" + public).digest()[:4]
    assert struct.unpack(">Q", line.signature[:8]) == (1679315147,)
    message = b"cosignature/v1\ntime 1679315147\nexample.com/log\n7\n" + base64.b64encode(ROOT) + b"\n"
    witness.private_key.public_key().verify(line.signature[8:], message)
    again = cp.cosign(parsed, witness, "witness.example/w1", 1679315200)
    assert len(again.signatures) == 2  # a newer cosignature replaces the older
    moved = cp.parse(cosigned.text().replace("\n7\n", "\n8\n"))
    with pytest.raises(CheckpointError, match="bad cosignature"):
        cp.verify_cosignature(moved, public, "witness.example/w1")
    with pytest.raises(CheckpointError, match="no cosignature by witness other"):
        cp.verify_cosignature(parsed, public, "other")
