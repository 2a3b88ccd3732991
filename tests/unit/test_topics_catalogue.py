"""The topic catalogue: unique explicit names, compacted state and reference data, retained events and audit."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.topics import DAY_MS, Catalogue, Cleanup, TopicSpec, with_partitions

#: What Kafka accepts as a topic name (legal characters, at most 249 of them).
KAFKA_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

COMPACTED = ("ref_parties", "ref_carriers", "ens_state_changelog", "filing_ledger_changelog")
RETAINED_EVENTS = (
    "bookings",
    "filing_drafts",
    "filings_outbound",
    "notifications_inbound",
    "notifications_parsed",
    "alerts",
    "dead_letters",
)

prefixes = st.from_regex(r"[A-Za-z0-9._-]{1,60}", fullmatch=True)
party_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}", fullmatch=True)


class TestNames:
    def test_names_are_unique(self):
        """No two topics of the catalogue, party queues included, share a name."""
        catalogue = Catalogue.for_prefix("")
        names = [spec.name for spec in catalogue.all()]
        names += [catalogue.party_queue(party).name for party in ("ACME", "CARRIER-1")]
        assert len(names) == len(set(names))

    def test_every_fixed_topic_is_listed_once(self):
        """all() holds every topic property of the catalogue, each exactly once."""
        catalogue = Catalogue()
        properties = [name for name, value in vars(Catalogue).items() if isinstance(value, property)]
        assert sorted(spec.name for spec in catalogue.all()) == sorted(
            getattr(catalogue, name).name for name in properties
        )

    def test_names_are_explicit_ics2_names(self):
        """Names are spelled out under the ics2. namespace, not derived from code."""
        catalogue = Catalogue()
        assert catalogue.bookings.name == "ics2.bookings"
        assert catalogue.ens_state_changelog.name == "ics2.ens-state-changelog"
        assert catalogue.party_queue("ACME").name == "ics2.party.ACME.queue"

    def test_by_name_finds_a_topic_and_refuses_unknown_ones(self):
        """by_name returns the spec of a catalogue topic and raises KeyError for anything else."""
        catalogue = Catalogue.for_prefix("p.")
        assert catalogue.by_name("p.ics2.audit") == catalogue.audit
        with pytest.raises(KeyError):
            catalogue.by_name("ics2.audit")

    def test_every_topic_documents_itself(self):
        """Every spec says why it exists and what its key and value are."""
        for spec in Catalogue().all():
            assert spec.purpose and spec.key and spec.value, spec.name


class TestCleanup:
    @pytest.mark.parametrize("attribute", COMPACTED)
    def test_reference_and_state_topics_are_compacted(self, attribute):
        """Reference data and table changelogs keep the latest value per key and have no time limit."""
        spec: TopicSpec = getattr(Catalogue(), attribute)
        config = spec.config()
        assert spec.cleanup is Cleanup.COMPACT
        assert config["cleanup.policy"] == "compact"
        assert "retention.ms" not in config

    @pytest.mark.parametrize("attribute", RETAINED_EVENTS)
    def test_event_topics_are_retained_for_a_bounded_time(self, attribute):
        """Event topics delete old segments after their retention, which is at least 90 days."""
        spec: TopicSpec = getattr(Catalogue(), attribute)
        config = spec.config()
        assert config["cleanup.policy"] == "delete"
        assert int(config["retention.ms"]) == spec.retention_ms
        assert spec.retention_ms is not None and spec.retention_ms >= 90 * DAY_MS

    def test_audit_is_kept_forever_in_order(self):
        """The audit trail is never deleted nor compacted, and has one partition so its hash chain is ordered."""
        audit = Catalogue().audit
        assert audit.config() == {"cleanup.policy": "delete", "retention.ms": "-1"}
        assert with_partitions(audit, 12).partitions == 1

    def test_party_queue_is_retained(self):
        """A party's queue keeps its alerts like an event topic."""
        config = Catalogue().party_queue("ACME").config()
        assert config["cleanup.policy"] == "delete"
        assert int(config["retention.ms"]) > 0

    def test_extra_config_is_added(self):
        """Extra settings of a spec are merged into its config."""
        spec = TopicSpec("x", "why", "k", "v", extra_config=(("max.message.bytes", "2000000"),))
        assert spec.config()["max.message.bytes"] == "2000000"


class TestPartitions:
    def test_default_fills_only_unspecified_counts(self):
        """with_partitions applies the deployment's default where a spec leaves the count open."""
        catalogue = Catalogue()
        concrete = {spec.name: with_partitions(spec, 6).partitions for spec in catalogue.all()}
        assert concrete.pop(catalogue.audit.name) == 1
        assert concrete.pop(catalogue.simulator_state.name) == 1
        assert set(concrete.values()) == {6}


class TestPrefix:
    @settings(max_examples=150, deadline=None)
    @given(prefix=prefixes)
    def test_prefix_is_applied_to_every_name(self, prefix):
        """Every topic of a prefixed catalogue is the unprefixed name with the prefix in front."""
        plain = [spec.name for spec in Catalogue().all()]
        prefixed = [spec.name for spec in Catalogue.for_prefix(prefix).all()]
        assert prefixed == [prefix + name for name in plain]

    @pytest.mark.parametrize("prefix", ["has space.", "slash/", "colon:", "ümlaut.", "tab\t"])
    def test_invalid_prefix_is_refused(self, prefix):
        """A prefix with characters Kafka does not allow in topic names is refused."""
        with pytest.raises(ValueError, match="topic prefix"):
            Catalogue.for_prefix(prefix)


class TestPartyIds:
    @pytest.mark.parametrize(
        "party_id",
        [
            "",
            "-leading-dash",
            ".leading-dot",
            "has space",
            "a/b",
            "a:b",
            "é",
            "x" * 102,
            "ACME\n",
        ],
    )
    def test_invalid_party_ids_are_refused(self, party_id):
        """A party id that cannot be part of a Kafka topic name is refused."""
        with pytest.raises(ValueError, match="cannot name a topic"):
            Catalogue().party_queue(party_id)

    @settings(max_examples=150, deadline=None)
    @given(prefix=st.one_of(st.just(""), prefixes), party_id=party_ids)
    def test_valid_party_ids_give_valid_distinct_topic_names(self, prefix, party_id):
        """Any accepted party id and prefix give a legal Kafka topic name that no fixed topic has."""
        catalogue = Catalogue.for_prefix(prefix)
        queue = catalogue.party_queue(party_id)
        assert KAFKA_TOPIC_NAME.match(queue.name)
        assert queue.name == f"{prefix}ics2.party.{party_id}.queue"
        assert queue.name not in {spec.name for spec in catalogue.all()}

    @settings(max_examples=100, deadline=None)
    @given(first=party_ids, second=party_ids)
    def test_distinct_parties_get_distinct_queues(self, first, second):
        """Two different party ids never share a queue."""
        catalogue = Catalogue()
        same_queue = catalogue.party_queue(first).name == catalogue.party_queue(second).name
        assert same_queue == (first == second)
