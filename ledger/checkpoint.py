"""Checkpoints (signed tree heads) in the C2SP tlog-checkpoint format, signed as C2SP signed notes.

A checkpoint is three lines, the *note text*: the log's origin, the tree size in decimal, the root
hash in base64; then a blank line and one signature line per signer::

    evalbot/3f0c…
    1042
    qvBq3F2p…=

    — evalbot/3f0c… AbCdEf…

A signature line is ``— <key name> base64(key ID || signature)``; the key ID is the first four bytes
of ``SHA-256(key name || 0x0A || type || public key)``. The log signs the note text with Ed25519
(type 0x01, c2sp.org/signed-note); a witness cosigns (type 0x04, c2sp.org/tlog-cosignature) the
message ``cosignature/v1\\ntime <t>\\n`` + note text, and its signature is an 8-byte big-endian
timestamp followed by the Ed25519 signature. Verifiers ignore signatures by keys they were not given.

Everything here is pure: text in, values out, :class:`CheckpointError` naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.errors import LedgerError
from ledger.keys import Signer

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
_DASH = "\u2014 "
_MAX_SIGNATURES = 64
_MAX_SIZE = 2**63 - 1


class CheckpointError(LedgerError):
    """A checkpoint that cannot be read, or whose signature does not hold."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CheckpointError(f"{what}: not base64: {text[:40]!r}") from None


def key_id(name: str, public_key: bytes, sig_type: int = ED25519) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name):
        raise CheckpointError(f"key name {name!r}: must be non-empty, without spaces or '+'")
    return name


def vkey(name: str, public_key: bytes, sig_type: int = ED25519) -> str:
    """The verifier key string ``<name>+<hex key ID>+<base64(type || key)>`` of c2sp.org/signed-note."""
    return f"{check_name(name)}+{key_id(name, public_key, sig_type).hex()}+{_b64(bytes([sig_type]) + public_key)}"


def parse_vkey(text: str) -> tuple[str, int, bytes]:
    """(name, signature type, raw public key) of a verifier key string; its key ID is checked."""
    parts = text.strip().split("+", 2)  # the base64 key may contain "+" itself
    if len(parts) != 3:
        raise CheckpointError(f"verifier key {text[:60]!r}: expected <name>+<key id>+<key>")
    name, hex_id, blob = parts
    raw = _unb64(blob, "verifier key")
    if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
        raise CheckpointError(f"verifier key {name}: not an Ed25519 key (type 0x01 or 0x04, 32 bytes)")
    if key_id(name, raw[1:], raw[0]).hex() != hex_id.lower():
        raise CheckpointError(f"verifier key {name}: key id {hex_id} does not match the key")
    return check_name(name), raw[0], raw[1:]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text: what the log signs."""
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), _b64(self.root), *self.extensions))


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes  # after the key ID: 64 bytes (Ed25519), or 8 + 64 (timestamped cosignature)

    def line(self) -> str:
        return f"{_DASH}{self.name} {_b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signatures: tuple[NoteSignature, ...] = field(default=())

    def text(self) -> str:
        return self.checkpoint.text() + "\n" + "".join(s.line() for s in self.signatures)


def parse(text: str) -> SignedCheckpoint:
    """Read a signed checkpoint; refuses anything that is not exactly the format (no signature kept
    that a verifier could misread, no second blank line, no control characters)."""
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise CheckpointError("checkpoint contains control characters")
    split = text.rfind("\n\n")
    if split < 0:
        raise CheckpointError("checkpoint has no blank line before its signatures")
    note, sig_block = text[: split + 1], text[split + 2 :]
    lines = note[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(f"checkpoint has {len(lines)} lines before its signatures, needs origin, size, root")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise CheckpointError("checkpoint origin line is empty")
    if not size_text.isdigit() or not size_text.isascii() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError(f"checkpoint size {size_text[:30]!r} is not a decimal number")
    size = int(size_text)
    if size > _MAX_SIZE:
        raise CheckpointError(f"checkpoint size {size_text[:30]} is too large")
    root = _unb64(root_text, "checkpoint root hash")
    if len(root) != 32:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, not 32")
    if any(not e for e in extensions):
        raise CheckpointError("checkpoint has an empty line inside its text")
    if not sig_block.endswith("\n"):
        raise CheckpointError("checkpoint does not end with a newline")
    sig_lines = sig_block[:-1].split("\n")
    if len(sig_lines) > _MAX_SIGNATURES:
        raise CheckpointError(f"checkpoint has {len(sig_lines)} signatures, more than {_MAX_SIGNATURES}")
    signatures = []
    for line in sig_lines:
        if not line.startswith(_DASH):
            raise CheckpointError(f"signature line {line[:40]!r} does not start with '— '")
        name, _, blob = line[len(_DASH) :].partition(" ")
        check_name(name)
        raw = _unb64(blob, f"signature of {name}")
        if len(raw) < 5:
            raise CheckpointError(f"signature of {name} is too short")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    if not signatures:
        raise CheckpointError("checkpoint has no signature")
    return SignedCheckpoint(Checkpoint(origin, size, root, tuple(extensions)), tuple(signatures))


def _public(signer: Signer) -> bytes:
    return bytes.fromhex(signer.public_hex)


def sign(checkpoint: Checkpoint, signer: Signer, name: str | None = None) -> SignedCheckpoint:
    """The checkpoint signed by the log's key; the key name defaults to the origin."""
    name = check_name(name or checkpoint.origin)
    signature = signer.private_key.sign(checkpoint.text().encode("utf-8"))
    return SignedCheckpoint(checkpoint, (NoteSignature(name, key_id(name, _public(signer)), signature),))


def _cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint.text()}".encode()


def cosign(signed: SignedCheckpoint, signer: Signer, name: str, timestamp: int) -> SignedCheckpoint:
    """``signed`` with the witness ``name``'s timestamped cosignature added (replacing an older one)."""
    check_name(name)
    if not 0 <= timestamp <= _MAX_SIZE:
        raise CheckpointError(f"cosignature time {timestamp} is out of range")
    kid = key_id(name, _public(signer), COSIGNATURE_V1)
    signature = signer.private_key.sign(_cosigned_message(signed.checkpoint, timestamp))
    kept = tuple(s for s in signed.signatures if (s.name, s.key_id) != (name, kid))
    return replace(signed, signatures=(*kept, NoteSignature(name, kid, struct.pack(">Q", timestamp) + signature)))


def _find(signed: SignedCheckpoint, name: str, kid: bytes) -> NoteSignature | None:
    return next((s for s in signed.signatures if s.name == name and s.key_id == kid), None)


def verify(signed: SignedCheckpoint, public_key: bytes, name: str | None = None) -> Checkpoint:
    """The checkpoint, if the log key ``public_key`` (named ``name``, default the origin) signed it."""
    name = name or signed.checkpoint.origin
    found = _find(signed, name, key_id(name, public_key))
    if found is None:
        others = ", ".join(sorted({s.name for s in signed.signatures}))
        raise CheckpointError(
            f"checkpoint of {signed.checkpoint.origin} carries no signature by key {name} "
            f"{key_id(name, public_key).hex()} (signed by: {others}; re-signed with another key?)"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(found.signature, signed.checkpoint.text().encode())
    except (InvalidSignature, ValueError):
        raise CheckpointError(
            f"checkpoint of {signed.checkpoint.origin}, size {signed.checkpoint.size}: bad signature by {name}"
        ) from None
    return signed.checkpoint


def verify_cosignature(signed: SignedCheckpoint, public_key: bytes, name: str) -> int:
    """The time at which witness ``name`` cosigned ``signed``; raises if it did not."""
    found = _find(signed, name, key_id(name, public_key, COSIGNATURE_V1))
    if found is None:
        raise CheckpointError(f"checkpoint carries no cosignature by witness {name}")
    if len(found.signature) != 72:
        raise CheckpointError(f"cosignature of {name} is {len(found.signature)} bytes, not 8 + 64")
    (timestamp,) = struct.unpack(">Q", found.signature[:8])
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            found.signature[8:], _cosigned_message(signed.checkpoint, timestamp)
        )
    except (InvalidSignature, ValueError):
        raise CheckpointError(f"bad cosignature by witness {name}") from None
    return int(timestamp)
