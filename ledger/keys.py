"""Ed25519 keys: generating the validator's key pair, loading it, and loading auditors' public keys.

The private key is a PKCS#8 PEM file readable by its owner only; the public key is written next to
it as ``<key>.pub`` (PEM). A key is named in the ledger by its id: the first 16 hex digits of the
SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import SigningKeyError

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def raw_public_hex(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(*_RAW).hex()


def key_id_of(public_hex: str) -> str:
    return hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]


def public_key_from_hex(public_hex: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey
    public_hex: str
    key_id: str

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> Signer:
        public_hex = raw_public_hex(private_key.public_key())
        return cls(private_key, public_hex, key_id_of(public_hex))

    @classmethod
    def load(cls, path: Path) -> Signer:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SigningKeyError(
                f"{path}: signing key not found (create one with `evalbot ledger keygen`)"
            ) from None
        except OSError as exc:
            raise SigningKeyError(f"{path}: cannot read signing key: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise SigningKeyError(f"{path}: not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{path}: not an Ed25519 private key")
        return cls.from_private_key(key)

    def sign(self, message: bytes) -> str:
        return self.private_key.sign(message).hex()


def generate(path: Path, *, force: bool = False) -> tuple[Signer, Path]:
    """Write a new key pair (``path`` and ``path.pub``); refuses to replace a key unless ``force``."""
    pub_path = path.with_name(path.name + ".pub")
    if path.exists() and not force:
        raise SigningKeyError(f"{path}: a signing key already exists (pass --force to replace it)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start, so the key is never readable by others, even for a moment.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.replace(tmp, path)
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Signer.from_private_key(key), pub_path


def load_public_key(path: Path) -> str:
    """A public key file (PEM, or the raw key as 64 hex digits) as raw hex."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{path}: public key file not found") from None
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read public key: {exc.strerror}") from None
    text = data.strip()
    if len(text) == 64:
        try:
            return raw_public_hex(public_key_from_hex(text.decode("ascii")))
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{path}: not a PEM public key or 64 hex digits") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return raw_public_hex(key)


def signature_valid(public_key: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        public_key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True
