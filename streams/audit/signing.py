"""Ed25519 signatures on the audit trail, so that a writer of the audit topic cannot extend a chain.

The hash chain shows a record changed, removed or reordered, but anyone who can write to the topic can append a
record with recomputed hashes. The audit chain stage therefore signs every record with a private key only it holds;
``ics2 replay`` verifies with the public key. The signed text is ``ics2-audit/1|<mbl>|<sequence>|<hash>``: the hash
already seals the payload, the kind, the time and the link to the record before, and the MBL is not in the hash.
Ed25519 signatures are deterministic, so a record chained again after a crash is byte-identical.

The private key is a PEM (PKCS #8) file, ``ICS2_AUDIT_KEY`` or ``<state dir>/audit/signing-key.pem``; ``ics2 audit
keygen`` writes it and ``ics2 audit public-key`` exports the public key that auditors verify with. A key is named by
its id, ``ed25519:`` and the first 16 hex digits of the SHA-256 of the raw public key.

The same key authenticates the entries the collectors hand to the chain stage (``EntryKey``): anyone who can write to
``ics2.audit-entries`` could otherwise have the worker sign an entry for a record it never saw. Collector and chain
stage run in the worker that holds the key, so a symmetric MAC derived from it is enough (a microsecond an entry,
where an Ed25519 signature and its check would cost two orders of magnitude more).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.errors import InputError
from streams.settings import Settings

SIGNED_FORMAT = "ics2-audit/1"
ENTRY_MAC_FORMAT = b"ics2-audit-entry/1"
"""What the entry MAC key is derived for, so that it is never the same secret as anything else made of the key."""


class SigningKeyError(InputError):
    """A key file that is missing, unreadable or not an Ed25519 key."""


def signed_text(mbl: str, sequence: int, record_hash: str) -> bytes:
    """What a record's signature covers."""
    return f"{SIGNED_FORMAT}|{mbl}|{sequence}|{record_hash}".encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


@dataclass(frozen=True)
class Signer:
    """The audit chain stage's private key and its id."""

    key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def of(cls, key: Ed25519PrivateKey) -> Signer:
        return cls(key, key_id(key.public_key()))

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def sign(self, mbl: str, sequence: int, record_hash: str) -> str:
        """The base64 signature of one record."""
        return base64.b64encode(self.key.sign(signed_text(mbl, sequence, record_hash))).decode("ascii")

    def entry_key(self) -> EntryKey:
        """The MAC key of the audit entries, derived from this private key (every worker sharing the key file
        derives the same one; a new key file makes entries still waiting under the old one unauthenticated)."""
        raw = self.key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return EntryKey(hmac.digest(raw, ENTRY_MAC_FORMAT, "sha256"))


@dataclass(frozen=True, repr=False)
class EntryKey:
    """HMAC-SHA256 over an audit entry's bytes: the collector tags each entry it emits, the chain stage chains only
    entries whose tag verifies."""

    secret: bytes

    def tag(self, value: bytes) -> bytes:
        return hmac.digest(self.secret, value, "sha256")

    def verifies(self, value: bytes, tag: bytes | None) -> bool:
        return tag is not None and hmac.compare_digest(self.tag(value), tag)


@dataclass(frozen=True)
class Keyring:
    """The public keys a replay trusts, by key id."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Iterable[Ed25519PublicKey]) -> Keyring:
        return cls({key_id(k): k for k in keys})

    def only(self, key_ids: Iterable[str]) -> Keyring:
        """The keys of the given ids; an id this keyring lacks is an error (the auditor named a key not given)."""
        wanted = list(key_ids)
        missing = [k for k in wanted if k not in self.keys]
        if missing:
            raise SigningKeyError(
                f"no public key with id {', '.join(missing)} was given",
                hint="give its public key file with --public-key (ics2 audit public-key exports it)",
            )
        return Keyring({k: self.keys[k] for k in wanted})

    def fault(self, mbl: str, sequence: int, record_hash: str, kid: Any, signature: Any) -> str | None:
        """Why a record (or a kept head) is not signed by one of these keys, or None when it is."""
        if not kid or not signature:
            return "unsigned"
        public = self.keys.get(kid)
        if public is None:
            return f"signed with key {kid}, which is not a trusted key"
        try:
            public.verify(base64.b64decode(signature, validate=True), signed_text(mbl, sequence, record_hash))
        except (InvalidSignature, binascii.Error, ValueError):
            return f"the signature does not verify with key {kid}"
        return None


def key_path(settings: Settings) -> Path:
    """Where the signing key is: ``ICS2_AUDIT_KEY``, else ``<state dir>/audit/signing-key.pem``."""
    return settings.audit_key or settings.state_dir / "audit" / "signing-key.pem"


def generate_key(path: Path) -> Signer:
    """Write a new private key to ``path`` (owner-only permissions); never overwrites an existing key.

    The key is written to a temporary file and linked into place, so a worker starting at the same moment never
    reads half a key, and of two that make one at once, one wins and the other is refused.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signing-key-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.link(temporary, path)
    except FileExistsError as exc:
        raise SigningKeyError(f"{path} already exists", hint="a key is never overwritten; move it away first") from exc
    finally:
        os.unlink(temporary)
    return Signer.of(key)


def load_signer(path: Path) -> Signer:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not a readable PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 private key")
    return Signer.of(key)


def signer_for(path: Path) -> Signer:
    """The worker's signer: the key at ``path``, made there on first use so that a fresh install signs too (a
    worker that loses the race to make it uses the one made)."""
    if not path.exists():
        with contextlib.suppress(SigningKeyError):
            return generate_key(path)
    return load_signer(path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the key file: {exc}") from exc
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        return load_signer(path).public
    if not isinstance(public, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return public
