"""Operator accounts, login sessions, cross-site refusal and the gate that identifies a dashboard request."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from click.testing import CliRunner

from streams.cli.operators import operators
from streams.pipeline.login import OperatorGate, session_cookie
from streams.security.operators import (
    CSRF_HEADER,
    CSRF_VALUE,
    SESSION_COOKIE,
    Operator,
    OperatorError,
    OperatorStore,
    basic_credentials,
    cross_site_refusal,
    hash_password,
    issue_session,
    session_name,
    verify_password,
)

SAME_SITE = {CSRF_HEADER: CSRF_VALUE, "Origin": "http://127.0.0.1:6066", "Sec-Fetch-Site": "same-origin"}
HOST = "127.0.0.1:6066"


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


class TestPasswords:
    def test_hash_verifies_only_its_password(self):
        encoded = hash_password("correct horse")
        assert encoded.startswith("scrypt$16384$8$1$")
        assert verify_password("correct horse", encoded)
        assert not verify_password("correct horsE", encoded)

    def test_same_password_gets_a_new_salt(self):
        assert hash_password("same password") != hash_password("same password")

    @pytest.mark.parametrize("encoded", ["", "plain", "md5$x$y$z$a$b", "scrypt$x$8$1$AAAA$AAAA", "scrypt$1$1$1$!$!"])
    def test_malformed_hash_matches_nothing(self, encoded):
        assert not verify_password("anything", encoded)


class TestStore:
    def test_saved_file_is_private_and_holds_no_password(self, tmp_path):
        path = tmp_path / "ops" / "operators.json"
        store = OperatorStore.new()
        store.add("alice", "alice-secret")
        store.add("bob", "bob-secret-1", party="COLOADER-D")
        store.save(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert "alice-secret" not in path.read_text()
        loaded = OperatorStore.load(path)
        assert loaded.session_key == store.session_key
        assert loaded.operators() == [Operator("alice"), Operator("bob", "COLOADER-D")]

    def test_authenticate(self):
        store = OperatorStore.new()
        store.add("bob", "bob-secret-1", party="COLOADER-D")
        assert store.authenticate("bob", "bob-secret-1") == Operator("bob", "COLOADER-D")
        assert store.authenticate("bob", "wrong-secret") is None
        assert store.authenticate("nobody", "bob-secret-1") is None

    def test_short_password_and_bad_name_refused(self):
        store = OperatorStore.new()
        with pytest.raises(OperatorError, match="8 characters"):
            store.add("alice", "short")
        with pytest.raises(OperatorError, match="operator name"):
            store.add("alice smith", "long enough")

    def test_not_an_operators_file(self, tmp_path):
        path = tmp_path / "operators.json"
        path.write_text(json.dumps({"operators": {}}))
        with pytest.raises(OperatorError, match="not an operators file"):
            OperatorStore.load(path)

    def test_party_scope(self):
        assert Operator("a").may_see("ANY")
        assert Operator("b", "FWD-1").may_see("FWD-1")
        assert not Operator("b", "FWD-1").may_see("FWD-2")


class TestSessions:
    def test_session_names_its_operator_until_it_expires(self):
        key = b"k" * 32
        token = issue_session(key, "alice", now=1000, ttl=60)
        assert session_name(key, token, now=1059) == "alice"
        assert session_name(key, token, now=1061) is None

    def test_forged_or_other_keys_session_refused(self):
        key = b"k" * 32
        token = issue_session(key, "alice", now=1000)
        body, _, signature = token.partition(".")
        forged = base64.urlsafe_b64encode(json.dumps({"n": "root", "e": 10**12}).encode()).decode()
        assert session_name(key, f"{forged.rstrip('=')}.{signature}", now=1000) is None
        assert session_name(b"x" * 32, token, now=1000) is None
        assert session_name(key, body, now=1000) is None
        assert session_name(key, "garbage", now=1000) is None

    def test_cookie_is_http_only_and_same_site_strict(self):
        cookie = session_cookie("v", secure=True)
        assert cookie.startswith(f"{SESSION_COOKIE}=v;")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
        assert "Secure" not in session_cookie("v", secure=False)


class TestBasic:
    def test_credentials_parsed(self):
        assert basic_credentials(basic("ops", "p:w")) == ("ops", "p:w")

    @pytest.mark.parametrize("header", [None, "", "Bearer x", "Basic", "Basic !!!", "Basic " + "bm9jb2xvbg=="])
    def test_other_headers_give_nothing(self, header):
        assert basic_credentials(header) is None


class TestCrossSite:
    def test_reads_never_refused(self):
        assert cross_site_refusal("GET", {}, HOST) is None

    def test_dashboard_request_passes(self):
        assert cross_site_refusal("POST", SAME_SITE, HOST) is None
        assert cross_site_refusal("POST", {CSRF_HEADER: CSRF_VALUE}, HOST) is None, "a script without Origin"

    def test_missing_custom_header_refused(self):
        headers = {k: v for k, v in SAME_SITE.items() if k != CSRF_HEADER}
        assert "header is missing" in cross_site_refusal("POST", headers, HOST)

    def test_other_origin_refused(self):
        assert "evil.example" in cross_site_refusal("POST", {**SAME_SITE, "Origin": "https://evil.example"}, HOST)
        assert cross_site_refusal("POST", {**SAME_SITE, "Origin": "null"}, HOST)

    def test_cross_site_fetch_metadata_refused(self):
        assert "cross-site" in cross_site_refusal("POST", {**SAME_SITE, "Sec-Fetch-Site": "cross-site"}, HOST)


@pytest.fixture
def accounts(tmp_path):
    path = tmp_path / "operators.json"
    store = OperatorStore.new()
    store.add("alice", "alice-secret")
    store.add("bob", "bob-secret-1", party="COLOADER-D")
    store.save(path)
    return path


class TestGate:
    def test_nobody_without_credentials(self, accounts):
        gate = OperatorGate(accounts)
        assert gate.identify({}, {}) is None
        assert gate.identify({"X-Forwarded-User": "alice"}, {}) is None, "no proxy header configured"

    def test_login_cookie_identifies(self, accounts):
        gate = OperatorGate(accounts)
        assert gate.log_in("bob", "wrong") is None
        operator, token = gate.log_in("bob", "bob-secret-1")
        assert operator == Operator("bob", "COLOADER-D")
        assert gate.identify({}, {SESSION_COOKIE: token}) == operator
        assert gate.identify({}, {SESSION_COOKIE: token + "0"}) is None

    def test_basic_credentials_identify(self, accounts):
        gate = OperatorGate(accounts)
        assert gate.identify({"Authorization": basic("alice", "alice-secret")}, {}) == Operator("alice")
        assert gate.identify({"Authorization": basic("alice", "alice-secreT")}, {}) is None

    def test_removed_account_loses_its_session_and_cached_password(self, accounts):
        gate = OperatorGate(accounts)
        _, token = gate.log_in("bob", "bob-secret-1")
        headers = {"Authorization": basic("bob", "bob-secret-1")}
        assert gate.identify(headers, {}) is not None
        store = OperatorStore.load(accounts)
        store.remove("bob")
        store.save(accounts)
        assert gate.identify({}, {SESSION_COOKIE: token}) is None
        assert gate.identify(headers, {}) is None

    def test_proxy_header_names_the_operator_and_the_file_scopes_it(self, accounts):
        gate = OperatorGate(accounts, proxy_header="X-Forwarded-User")
        assert gate.identify({"X-Forwarded-User": "bob"}, {}) == Operator("bob", "COLOADER-D")
        assert gate.identify({"X-Forwarded-User": "carol"}, {}) == Operator("carol")
        assert gate.has_accounts

    def test_too_many_wrong_passwords_lock_the_name_for_a_while(self, accounts):
        """Five wrong passwords within a minute lock the name, even for the right password; it unlocks later."""
        gate = OperatorGate(accounts)
        for second in range(5):
            assert gate.log_in("bob", "guess", now=1000 + second) is None
        assert gate.locked_for("bob", now=1005) == pytest.approx(55)
        assert gate.log_in("bob", "bob-secret-1", now=1005) is None, "locked"
        assert gate.locked_for("alice", now=1005) == 0, "other names are not locked"
        assert gate.locked_for("bob", now=1061) == 0
        assert gate.log_in("bob", "bob-secret-1", now=1061) is not None

    def test_no_file_no_accounts(self, tmp_path):
        gate = OperatorGate(tmp_path / "missing.json")
        assert not gate.has_accounts
        assert gate.identify({"Authorization": basic("alice", "alice-secret")}, {}) is None


class TestCommand:
    def test_add_list_remove(self, tmp_path):
        path = tmp_path / "operators.json"
        runner = CliRunner()
        added = runner.invoke(
            operators, ["add", "bob", "--party", "FWD-1", "--password-stdin", "--file", str(path)], input="pw-long-1\n"
        )
        assert added.exit_code == 0, added.output
        assert "party FWD-1 only" in added.output
        assert OperatorStore.load(path).authenticate("bob", "pw-long-1") == Operator("bob", "FWD-1")
        listed = runner.invoke(operators, ["list", "--file", str(path)])
        assert listed.output.split() == ["bob", "FWD-1"]
        assert runner.invoke(operators, ["remove", "bob", "--file", str(path)]).exit_code == 0
        assert runner.invoke(operators, ["remove", "bob", "--file", str(path)]).exit_code == 2

    def test_short_password_is_a_usage_error(self, tmp_path):
        path = tmp_path / "operators.json"
        result = CliRunner().invoke(operators, ["add", "bob", "--password-stdin", "--file", str(path)], input="x\n")
        assert result.exit_code == 2 and "8 characters" in result.output
        assert not path.exists()
