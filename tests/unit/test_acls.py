"""The grants of parties and processes: isolation between parties, least privilege for the processes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.security.acls import (
    CLUSTER_RESOURCE,
    Grant,
    allowed,
    gateway_grants,
    party_grants,
    party_group,
    party_user,
    principal_of,
    worker_grants,
)
from streams.topics import Catalogue

ROOT = Path(__file__).resolve().parents[2]
#: The modules whose code runs inside ``ics2 worker`` (build_pipeline and what it wires).
WORKER_CODE = sorted((ROOT / "streams" / "pipeline").rglob("*.py")) + sorted((ROOT / "streams" / "audit").glob("*.py"))
GATEWAY_CODE = sorted((ROOT / "streams" / "gateway").glob("*.py"))
#: The catalogue's fixed topics are its properties; methods (party_queue, all, ...) are not topics.
TOPIC_ATTRIBUTES = {name for name, member in vars(Catalogue).items() if isinstance(member, property)}
OPERATIONS = ("Read", "Write", "Describe", "Create", "Delete", "Alter", "DescribeConfigs", "AlterConfigs")

party_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
prefixes = st.sampled_from(["", "t1.", "prod-", "acme_"])


def _catalogue_attr(node: ast.AST) -> str | None:
    """``catalogue.X`` / ``self.catalogue.X`` / ``stage.catalogue.X`` (also with ``.name``) -> ``X``."""
    if isinstance(node, ast.Attribute) and node.attr == "name":
        node = node.value
    if not isinstance(node, ast.Attribute):
        return None
    owner = node.value
    owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else None
    if owner_name != "catalogue" or node.attr not in TOPIC_ATTRIBUTES:
        return None
    return node.attr


def _callee(func: ast.AST) -> str:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def topic_uses(paths: list[Path]) -> dict[str, set[str]]:
    """Catalogue topics the code names, as ``read`` (stage sources), ``changelog``, ``write`` (emits), ``any``."""
    uses: dict[str, set[str]] = {"read": set(), "changelog": set(), "write": set(), "any": set()}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            attr = _catalogue_attr(node)
            if attr is not None:
                uses["any"].add(attr)
            if isinstance(node, ast.Dict):
                for value in node.values:
                    if isinstance(value, ast.Tuple) and value.elts and (source := _catalogue_attr(value.elts[0])):
                        uses["read"].add(source)
            if isinstance(node, ast.Call):
                func = node.func
                func_name = (
                    func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                )
                args = [_catalogue_attr(arg) for arg in node.args]
                if func_name == "_table":
                    uses["changelog"].update(a for a in args if a)
                elif func_name in ("Emit", "emit", "dead_letter_emit") and args and args[0]:
                    uses["write"].add(args[0])
                elif func_name == "DeadLetterSink":
                    uses["write"].update(a for a in args if a)
    return uses


def _can(grants: list[Grant], user: str, resource_type: str, name: str, operation: str) -> bool:
    return allowed(grants, principal_of(user), resource_type, name, operation)


class TestGrant:
    def test_rejects_an_unknown_operation(self) -> None:
        """A grant with an operation Kafka does not know is refused when built, not by the broker later."""
        with pytest.raises(ValueError, match="operation"):
            Grant("User:a", "topic", "x", "literal", "Reed")

    def test_rejects_a_principal_without_type(self) -> None:
        """Principals are ``User:<name>``; a bare name would be an ACL that matches nobody."""
        with pytest.raises(ValueError, match="principal"):
            Grant("alice", "topic", "x", "literal", "Read")

    def test_prefixed_matches_by_prefix_and_literal_only_exactly(self) -> None:
        """A prefixed grant covers every name starting with it, a literal one only its own name."""
        prefixed = Grant("User:a", "topic", "ics2.", "prefixed", "Read")
        literal = Grant("User:a", "topic", "ics2.bookings", "literal", "Read")
        assert prefixed.matches("topic", "ics2.bookings")
        assert not prefixed.matches("group", "ics2.bookings")
        assert literal.matches("topic", "ics2.bookings")
        assert not literal.matches("topic", "ics2.bookings2")

    def test_read_implies_describe_but_not_write(self) -> None:
        """As in Kafka, Read implies Describe; nothing implies Write."""
        grants = [Grant("User:a", "topic", "q", "literal", "Read")]
        assert allowed(grants, "User:a", "topic", "q", "Describe")
        assert not allowed(grants, "User:a", "topic", "q", "Write")
        assert not allowed(grants, "User:b", "topic", "q", "Read")


class TestPartyUser:
    def test_user_name_is_prefixed_party_id(self) -> None:
        """A party's SCRAM user is ``party-<id>``, so it can never be a process user's name."""
        assert party_user("FWD-1") == "party-FWD-1"

    @pytest.mark.parametrize("bad", ["", "a b", "a,b", "a=b", "-lead", "x" * 102])
    def test_refuses_ids_that_are_unsafe_in_user_names(self, bad: str) -> None:
        """Ids with characters SCRAM or topic names would escape or refuse are rejected, never rewritten."""
        with pytest.raises(ValueError):
            party_user(bad)

    @settings(max_examples=150, deadline=None)
    @given(party_ids, party_ids)
    def test_distinct_parties_get_distinct_users(self, first: str, second: str) -> None:
        """Two different party ids never share a user."""
        assert (party_user(first) == party_user(second)) == (first == second)


class TestPartyGrants:
    @settings(max_examples=150, deadline=None)
    @given(prefixes, party_ids)
    def test_party_reads_its_own_queue(self, prefix: str, party: str) -> None:
        """The party may read and describe its own queue and use its own consumer group."""
        catalogue = Catalogue.for_prefix(prefix)
        grants = party_grants(catalogue, party)
        user = party_user(party)
        queue = catalogue.party_queue(party).name
        assert _can(grants, user, "topic", queue, "Read")
        assert _can(grants, user, "topic", queue, "Describe")
        assert _can(grants, user, "group", party_group(catalogue, party), "Read")
        assert _can(grants, user, "group", f"{party_group(catalogue, party)}:alerting", "Read")

    @settings(max_examples=200, deadline=None)
    @given(prefixes, party_ids, party_ids)
    def test_party_never_touches_another_partys_queue_or_group(self, prefix: str, party: str, other: str) -> None:
        """No operation on another party's queue or groups, including parties whose id extends this one's."""
        if party == other:
            other = f"{other}X"
        catalogue = Catalogue.for_prefix(prefix)
        grants = party_grants(catalogue, party)
        user = party_user(party)
        for candidate in (other, f"{party}.{other}", f"{party}{other}"[:100]):
            queue = catalogue.party_queue(candidate).name
            groups = (party_group(catalogue, candidate), f"{party_group(catalogue, candidate)}:alerting")
            for operation in OPERATIONS:
                assert not _can(grants, user, "topic", queue, operation), (candidate, operation)
                for group in groups:
                    assert not _can(grants, user, "group", group, operation), (candidate, group, operation)

    @settings(max_examples=100, deadline=None)
    @given(prefixes, party_ids)
    def test_party_never_touches_filing_topics_or_writes(self, prefix: str, party: str) -> None:
        """No right on any catalogue topic (filings, bookings, alerts...), no Write or Create anywhere, no cluster."""
        catalogue = Catalogue.for_prefix(prefix)
        grants = party_grants(catalogue, party)
        user = party_user(party)
        for spec in catalogue.all():
            for operation in OPERATIONS:
                assert not _can(grants, user, "topic", spec.name, operation), (spec.name, operation)
        assert all(grant.operation in ("Read", "Describe") for grant in grants)
        assert all(grant.resource_type in ("topic", "group") for grant in grants)
        assert all(grant.principal == principal_of(user) for grant in grants)

    def test_grants_follow_the_deployment_prefix(self) -> None:
        """A party onboarded on one prefix gets nothing on the same queue of another deployment."""
        grants = party_grants(Catalogue.for_prefix("prod."), "FWD1")
        other_queue = Catalogue.for_prefix("test.").party_queue("FWD1").name
        assert not _can(grants, "party-FWD1", "topic", other_queue, "Read")


class TestWorkerGrants:
    catalogue = Catalogue.for_prefix("t1.")
    user = "ics2-worker"
    grants = worker_grants(catalogue, "ics2-streams", user)
    uses = topic_uses(WORKER_CODE)

    def _name(self, attr: str) -> str:
        return getattr(self.catalogue, attr).name

    def test_the_scan_finds_the_pipeline(self) -> None:
        """The code scan sees the stage sources, emits and changelogs (else the checks below would be vacuous)."""
        assert {"bookings", "notifications_inbound", "ens_events"} <= self.uses["read"]
        assert {"filings_outbound", "ens_events", "alerts"} <= self.uses["write"]
        assert {"plans_changelog", "ens_state_changelog"} <= self.uses["changelog"]

    def test_reads_every_stage_source(self) -> None:
        """Every topic a stage consumes is readable by the worker."""
        missing = [
            a for a in sorted(self.uses["read"]) if not _can(self.grants, self.user, "topic", self._name(a), "Read")
        ]
        assert not missing

    def test_writes_every_emitted_topic(self) -> None:
        """Every topic a stage emits to is writable by the worker."""
        missing = [
            a for a in sorted(self.uses["write"]) if not _can(self.grants, self.user, "topic", self._name(a), "Write")
        ]
        assert not missing

    def test_owns_its_changelogs(self) -> None:
        """Table changelogs are read on recovery, written, and declared (Create) by Faust."""
        for attr in self.uses["changelog"]:
            for operation in ("Read", "Write", "Create", "Describe"):
                assert _can(self.grants, self.user, "topic", self._name(attr), operation), (attr, operation)

    def test_every_named_topic_is_covered(self) -> None:
        """Any other catalogue topic the worker's code names (feeds, deriver tables) is readable or writable."""
        missing = [
            attr
            for attr in sorted(self.uses["any"])
            if not any(_can(self.grants, self.user, "topic", self._name(attr), op) for op in ("Read", "Write"))
        ]
        assert not missing

    def test_writes_party_queues_but_reads_none(self) -> None:
        """Alerts go to any party's queue, even one onboarded later; the worker cannot read those queues."""
        queue = self.catalogue.party_queue("LATE-PARTY").name
        assert _can(self.grants, self.user, "topic", queue, "Write")
        assert not _can(self.grants, self.user, "topic", queue, "Read")

    def test_least_privilege_on_unused_topics_and_cluster(self) -> None:
        """No right on reference data or the simulator's state, no topic creation outside its own, no cluster admin."""
        for spec in (self.catalogue.ref_parties, self.catalogue.ref_carriers, self.catalogue.simulator_state):
            assert not any(_can(self.grants, self.user, "topic", spec.name, op) for op in OPERATIONS), spec.name
        assert not _can(self.grants, self.user, "topic", self.catalogue.bookings.name, "Create")
        assert not _can(self.grants, self.user, "topic", self.catalogue.bookings.name, "Write")
        assert _can(self.grants, self.user, "cluster", CLUSTER_RESOURCE, "IdempotentWrite")
        assert not _can(self.grants, self.user, "cluster", CLUSTER_RESOURCE, "Alter")
        assert not _can(self.grants, self.user, "group", "ics2-streams-gateway", "Read")

    def test_transactional_ids_only_for_exactly_once(self) -> None:
        """Transactional ids are granted only when the worker runs exactly-once."""
        at_least_once = [g for g in self.grants if g.resource_type == "transactional_id"]
        exactly_once = worker_grants(self.catalogue, "ics2-streams", self.user, exactly_once=True)
        assert not at_least_once
        assert _can(exactly_once, self.user, "transactional_id", "ics2-streams-tp-0", "Write")


class TestGatewayGrants:
    catalogue = Catalogue.for_prefix("")
    user = "ics2-gateway"
    grants = gateway_grants(catalogue, "ics2-streams", user)

    def test_covers_every_topic_the_connector_names(self) -> None:
        """Every catalogue topic the gateway code names is readable or writable by the gateway."""
        uses = topic_uses(GATEWAY_CODE)
        assert uses["any"], "the scan found no catalogue topic in the gateway"
        for attr in uses["any"]:
            name = getattr(self.catalogue, attr).name
            assert any(_can(self.grants, self.user, "topic", name, op) for op in ("Read", "Write")), attr

    def test_reads_filings_and_writes_notifications_only(self) -> None:
        """The connector reads outbound filings and writes inbound notifications, never the reverse or bookings."""
        assert _can(self.grants, self.user, "topic", self.catalogue.filings_outbound.name, "Read")
        assert not _can(self.grants, self.user, "topic", self.catalogue.filings_outbound.name, "Write")
        assert _can(self.grants, self.user, "topic", self.catalogue.notifications_inbound.name, "Write")
        assert not _can(self.grants, self.user, "topic", self.catalogue.bookings.name, "Read")
        assert not _can(self.grants, self.user, "topic", self.catalogue.party_queue("A").name, "Read")
        assert _can(self.grants, self.user, "group", "ics2-streams-gateway", "Read")
