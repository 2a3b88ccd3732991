"""Who is asking: the dashboard's operator from a login cookie, HTTP Basic credentials or a reverse proxy's header.

The accounts are those of ``streams.security.operators``' file, read again when it changes, so ``ics2 operators
add`` takes effect on a running worker. A browser logs in on ``/login`` and gets a signed, HttpOnly, SameSite=Strict
cookie; scripts send ``Authorization: Basic`` on every request; behind a proxy that authenticates, the proxy's
header names the operator (``ICS2_OPERATOR_HEADER``) and the file, if it lists that name, scopes them to a party.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import structlog

from streams.security.operators import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    Operator,
    OperatorError,
    OperatorStore,
    basic_credentials,
    issue_session,
    session_name,
)

log = structlog.get_logger(__name__)

#: Verified Basic credentials kept, so a script polling every second does not pay a scrypt hash each time.
BASIC_CACHE = 64
#: Wrong passwords for one name within ``LOCK_S`` before that name is refused for ``LOCK_S``: a guessing script
#: gets a handful of tries a minute (an attacker can lock a name out for a minute; the log names each failure).
MAX_FAILURES, LOCK_S = 5, 60.0


class OperatorGate:
    """Identifies the operator of a request; None means not logged in."""

    def __init__(self, path: Path, proxy_header: str | None = None) -> None:
        self.path = path
        self.proxy_header = proxy_header
        self._store = OperatorStore.new()
        self._stamp: tuple[int, int] | None = None
        self._basic: OrderedDict[str, Operator] = OrderedDict()
        self._failures: dict[str, list[float]] = {}

    def store(self) -> OperatorStore:
        """The accounts as the file has them now (re-read when its size or time changed; a broken file logs)."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            try:
                self._store = OperatorStore.load(self.path) if stamp else OperatorStore.new()
                self._basic.clear()
                self._stamp = stamp
            except OperatorError as exc:
                log.error("operators_file_unreadable", path=str(self.path), error=str(exc))
        return self._store

    @property
    def has_accounts(self) -> bool:
        return bool(self.store().accounts) or bool(self.proxy_header)

    def identify(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> Operator | None:
        """The operator a request comes from: the proxy's header, else the session cookie, else Basic credentials."""
        store = self.store()
        if self.proxy_header:
            name = headers.get(self.proxy_header)
            if name:
                return store.operator(name) or Operator(name)
        token = cookies.get(SESSION_COOKIE)
        if token:
            name = session_name(store.session_key, token)
            operator = store.operator(name) if name else None
            if operator is not None:
                return operator
        credentials = basic_credentials(headers.get("Authorization"))
        return None if credentials is None else self._basic_operator(store, *credentials)

    def locked_for(self, name: str, now: float | None = None) -> float:
        """Seconds until ``name`` may try a password again (0 when it may now)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self._failures.get(name, ()) if now - t < LOCK_S]
        self._failures[name] = recent
        if not recent:
            self._failures.pop(name)
        return LOCK_S - (now - recent[-MAX_FAILURES]) if len(recent) >= MAX_FAILURES else 0.0

    def _check(self, store: OperatorStore, name: str, password: str, now: float | None) -> Operator | None:
        """The password check, refused while the name is locked, a failure counted."""
        if self.locked_for(name, now) > 0:
            log.warning("operator_locked_out", operator=name[:64])
            return None
        operator = store.authenticate(name, password)
        if operator is None:
            self._failures.setdefault(name, []).append(time.monotonic() if now is None else now)
            log.warning("operator_login_failed", operator=name[:64])
        return operator

    def _basic_operator(self, store: OperatorStore, name: str, password: str) -> Operator | None:
        account = store.accounts.get(name) or {}
        key = hashlib.sha256(f"{name}\0{password}\0{account.get('password')}".encode()).hexdigest()
        if key in self._basic:
            return self._basic[key]
        operator = self._check(store, name, password, None)
        if operator is not None:
            self._basic[key] = operator
            while len(self._basic) > BASIC_CACHE:
                self._basic.popitem(last=False)
        return operator

    def log_in(self, name: str, password: str, now: float | None = None) -> tuple[Operator, str] | None:
        """The operator and the cookie value of a new session, or None for a wrong name or password (or a name
        locked after too many wrong ones: ``locked_for``)."""
        store = self.store()
        operator = self._check(store, name, password, now)
        if operator is None:
            return None
        log.info("operator_logged_in", operator=operator.name, party=operator.party)
        return operator, issue_session(store.session_key, operator.name)


def session_cookie(value: str, secure: bool, max_age: int = SESSION_TTL_S) -> str:
    """The ``Set-Cookie`` value: HttpOnly (no script reads it), SameSite=Strict (no cross-site request sends it)."""
    flags = f"; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return f"{SESSION_COOKIE}={value}{flags}{'; Secure' if secure else ''}"


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ICS2 operator login</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; background: #f4f6f8; display: flex; justify-content: center; }
 form { background: #fff; border: 1px solid #d5dbe1; border-radius: 6px; padding: 20px 28px; margin-top: 12vh; }
 h1 { font-size: 18px; color: #12355b; } label { display: block; margin: 10px 0; }
 input { display: block; width: 240px; padding: 4px; } #error { color: #b3141b; min-height: 1.4em; }
</style></head>
<body><form id="login">
 <h1>ICS2 operator dashboard</h1>
 <label>Operator <input id="name" name="name" autocomplete="username" required></label>
 <label>Password <input id="password" name="password" type="password" autocomplete="current-password" required>
 </label>
 <button type="submit" id="submit">Log in</button>
 <p id="error"></p>
 <p><small>Accounts: <code>ics2 operators add NAME</code> on the worker's machine.</small></p>
</form>
<script>
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {name: document.getElementById("name").value, password: document.getElementById("password").value};
  const response = await fetch("/login", {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-ICS2-Request": "dashboard"}});
  if (response.ok) {
    const next = new URLSearchParams(location.search).get("next") || "";
    location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/dashboard";
  } else {
    document.getElementById("error").textContent = (await response.json()).error || "login failed";
  }
});
</script></body></html>
"""
