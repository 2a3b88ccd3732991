"""Operator accounts of the dashboard: who may look at alerts and acknowledge them, and for which party.

Accounts live in one JSON file the operator manages with ``ics2 operators add|remove|list`` (mode 0600)::

    {"version": 1, "session_key": "<hex>",
     "operators": {"alice": {"party": null, "password": "scrypt$16384$8$1$<salt>$<hash>"},
                   "bob":   {"party": "COLOADER-D", "password": "scrypt$..."}}}

Passwords are kept as stdlib ``hashlib.scrypt`` hashes with a random salt. The session key signs the dashboard's
login cookie, so every worker reading the same file accepts a session started on another one. An operator with a
``party`` sees and acknowledges that party's alerts only; one without sees every party.

Nothing here touches Kafka or a web server: the worker's views (``streams.pipeline.web``) call these functions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.errors import ICS2StreamsError

#: scrypt cost (2**14, r=8, p=1: ~16 MiB and tens of milliseconds per try, OWASP's minimum for scrypt).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: A dashboard login lasts a working shift.
SESSION_TTL_S = 12 * 3600
SESSION_COOKIE = "ics2_session"
#: The header every state-changing request of the dashboard carries: a page of another site cannot set it on a
#: cross-site request without a CORS preflight, which the worker never grants.
CSRF_HEADER = "X-ICS2-Request"
CSRF_VALUE = "dashboard"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class OperatorError(ICS2StreamsError):
    """The operators file or an account in it cannot be used as given."""


@dataclass(frozen=True, slots=True)
class Operator:
    """A logged-in operator; ``party`` None means every party."""

    name: str
    party: str | None = None

    def may_see(self, party: str | None) -> bool:
        """Whether this operator may see (and acknowledge) what concerns ``party``."""
        return self.party is None or party == self.party

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "party": self.party}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), the form the operators file keeps."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time compare; a malformed hash matches nothing)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise OperatorError(f"operator name {name!r}: letters, digits, '.', '_', '@' or '-', at most 64")
    return name


@dataclass
class OperatorStore:
    """The accounts of one operators file, with the key that signs login sessions."""

    session_key: bytes
    accounts: dict[str, dict[str, Any]]

    @classmethod
    def new(cls) -> OperatorStore:
        return cls(secrets.token_bytes(32), {})

    @classmethod
    def load(cls, path: Path) -> OperatorStore:
        """The file's accounts; a missing file has none (and a fresh key, saved with the first account)."""
        if not path.exists():
            return cls.new()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(bytes.fromhex(data["session_key"]), dict(data.get("operators") or {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OperatorError(f"{path} is not an operators file: {exc}") from exc

    def save(self, path: Path) -> None:
        """Written to a temporary file, made 0600, then renamed: a worker reading it never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": 1, "session_key": self.session_key.hex(), "operators": self.accounts}
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, sort_keys=True)
        os.replace(temporary, path)

    def add(self, name: str, password: str, party: str | None = None) -> Operator:
        """Add or replace an account (a new password or scope for an existing name replaces the old ones)."""
        if len(password) < 8:
            raise OperatorError("an operator's password needs at least 8 characters")
        self.accounts[check_name(name)] = {"party": party or None, "password": hash_password(password)}
        return Operator(name, party or None)

    def remove(self, name: str) -> bool:
        return self.accounts.pop(name, None) is not None

    def operator(self, name: str) -> Operator | None:
        account = self.accounts.get(name)
        return None if account is None else Operator(name, account.get("party"))

    def operators(self) -> list[Operator]:
        return [Operator(name, a.get("party")) for name, a in sorted(self.accounts.items())]

    def authenticate(self, name: str, password: str) -> Operator | None:
        """The operator when the password is right; None otherwise (unknown names cost a hash too)."""
        account = self.accounts.get(name)
        encoded = account["password"] if account else hash_password("", b"\0" * 16)
        if verify_password(password, encoded) and account is not None:
            return self.operator(name)
        return None


def issue_session(key: bytes, name: str, now: float | None = None, ttl: float = SESSION_TTL_S) -> str:
    """A signed cookie value naming the operator until it expires; the account is looked up again on every use."""
    expires = int((time.time() if now is None else now) + ttl)
    body = base64.urlsafe_b64encode(json.dumps({"n": name, "e": expires}).encode()).decode().rstrip("=")
    return f"{body}.{_sign(key, body)}"


def session_name(key: bytes, token: str, now: float | None = None) -> str | None:
    """The operator a session cookie names, or None when it is forged, malformed or expired."""
    body, _, signature = token.partition(".")
    if not body or not hmac.compare_digest(signature, _sign(key, body)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        name, expires = str(data["n"]), float(data["e"])
    except (ValueError, KeyError, TypeError):
        return None
    return name if (time.time() if now is None else now) < expires else None


def _sign(key: bytes, body: str) -> str:
    return hmac.new(key, b"ics2-session:" + body.encode(), hashlib.sha256).hexdigest()


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """Name and password of an ``Authorization: Basic`` header (scripts and ``curl -u``), or None."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        name, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (name, password) if sep else None


def cross_site_refusal(method: str, headers: Mapping[str, str], host: str | None) -> str | None:
    """Why a state-changing request must be refused as possibly cross-site, or None when it may go on.

    Three checks, each enough against a form or script of another site: the custom header (a cross-site page
    cannot set it without a CORS preflight, never granted), the browser's ``Sec-Fetch-Site``, and an ``Origin``
    naming another host.
    """
    if method.upper() in SAFE_METHODS:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get(CSRF_HEADER.lower()) != CSRF_VALUE:
        return f"the {CSRF_HEADER}: {CSRF_VALUE} header is missing: state changes come from the dashboard only"
    site = lowered.get("sec-fetch-site")
    if site not in (None, "same-origin", "none"):
        return f"a {site} request may not change anything"
    origin = lowered.get("origin")
    if origin and origin != "null" and host and origin.split("://", 1)[-1] != host:
        return f"a request from {origin} may not change anything on {host}"
    if origin == "null":
        return "a request from an opaque origin may not change anything"
    return None
