"""Topic administration against the session broker: apply creates, corrects and leaves topics, idempotently."""

from __future__ import annotations

import pytest

from streams.admin import alter_topic_config, apply_topics, delete_topics, describe_topics, list_topics
from streams.broker import free_tcp_port
from streams.errors import BrokerUnavailable
from streams.settings import Settings
from streams.topics import Catalogue, Cleanup, with_partitions


class TestApplyTopics:
    async def test_creates_every_catalogue_topic_with_its_config(self, kafka_settings, catalogue):
        """Every fixed topic exists with its partition count, compacted or retained as its spec says."""
        specs = catalogue.all()
        states = await describe_topics(kafka_settings, [spec.name for spec in specs])
        assert set(states) == {spec.name for spec in specs}
        for spec in specs:
            state = states[spec.name]
            assert state.partitions == with_partitions(spec, kafka_settings.default_partitions).partitions
            assert state.config["cleanup.policy"] == spec.cleanup.value
            for key, value in spec.config().items():
                assert state.config[key] == value, (spec.name, key)
            if spec.cleanup is Cleanup.DELETE:
                expected = str(spec.retention_ms) if spec.retention_ms is not None else "-1"
                assert state.overrides["retention.ms"] == expected
            else:
                assert "retention.ms" not in state.overrides

    async def test_second_apply_changes_nothing(self, kafka_settings, catalogue):
        """Applying the same catalogue again reports every topic unchanged and creates or updates none."""
        report = await apply_topics(kafka_settings, catalogue)
        assert report.created == () and report.updated == () and report.warnings == ()
        assert sorted(report.unchanged) == sorted(spec.name for spec in catalogue.all())
        assert report.changed is False

    async def test_drifted_config_is_corrected_and_other_overrides_kept(self, kafka_settings, catalogue):
        """A retention changed behind apply's back is set back to the spec; an unrelated override survives."""
        bookings = catalogue.bookings.name
        await alter_topic_config(kafka_settings, bookings, {"retention.ms": "1000", "max.message.bytes": "200000"})
        report = await apply_topics(kafka_settings, catalogue)
        assert report.updated_names == (bookings,)
        assert any(change.startswith("retention.ms: 1000 ->") for change in report.updated[0].changes)
        assert bookings not in report.unchanged
        state = (await describe_topics(kafka_settings, [bookings]))[bookings]
        assert state.overrides["retention.ms"] == catalogue.bookings.config()["retention.ms"]
        assert state.overrides["max.message.bytes"] == "200000"
        again = await apply_topics(kafka_settings, catalogue)
        assert again.changed is False

    async def test_compaction_switched_off_is_switched_back_on(self, kafka_settings, catalogue):
        """A compacted state topic turned into a deleting one is compacted again."""
        changelog = catalogue.ens_state_changelog.name
        await alter_topic_config(kafka_settings, changelog, {"cleanup.policy": "delete"})
        report = await apply_topics(kafka_settings, catalogue)
        assert report.updated_names == (changelog,)
        state = (await describe_topics(kafka_settings, [changelog]))[changelog]
        assert state.config["cleanup.policy"] == "compact"

    async def test_party_queue_is_created(self, kafka_settings, catalogue):
        """Naming a party creates its queue, retained like an event topic, and leaves the rest unchanged."""
        report = await apply_topics(kafka_settings, catalogue, ["FWD-ACME_01"])
        queue = catalogue.party_queue("FWD-ACME_01")
        assert report.created == (queue.name,)
        assert len(report.unchanged) == len(catalogue.all())
        state = (await describe_topics(kafka_settings, [queue.name]))[queue.name]
        assert state.partitions == kafka_settings.default_partitions
        assert state.overrides == queue.config()
        assert queue.name in await list_topics(kafka_settings, catalogue.prefix)

    async def test_invalid_party_id_creates_nothing(self, kafka_settings, topic_prefix):
        """A party id that cannot name a topic is refused before any topic is created."""
        with pytest.raises(ValueError, match="cannot name a topic"):
            await apply_topics(kafka_settings, Catalogue.for_prefix(topic_prefix), ["bad id"])
        assert await list_topics(kafka_settings, topic_prefix) == []


class TestPartitions:
    async def test_partitions_are_raised_never_lowered(self, kafka_settings, topic_prefix):
        """A partition count below the spec is raised; one above it is kept and reported as a warning."""
        catalogue = Catalogue.for_prefix(topic_prefix)
        names = [spec.name for spec in catalogue.all()]
        try:
            await apply_topics(kafka_settings.with_(default_partitions=2), catalogue)
            raised = await apply_topics(kafka_settings.with_(default_partitions=3), catalogue)
            single = {catalogue.audit.name, catalogue.simulator_state.name}
            assert single <= set(raised.unchanged)
            assert len(raised.updated) == len(names) - len(single)
            assert all(change.changes == ("partitions: 2 -> 3",) for change in raised.updated)
            states = await describe_topics(kafka_settings, names)
            assert {name: state.partitions for name, state in states.items() if name not in single} == {
                name: 3 for name in names if name not in single
            }
            lowered = await apply_topics(kafka_settings.with_(default_partitions=1), catalogue)
            assert lowered.changed is False
            assert len(lowered.warnings) == len(names) - len(single)
            assert all("more than the 1 specified" in warning for warning in lowered.warnings)
            states = await describe_topics(kafka_settings, names)
            assert states[catalogue.bookings.name].partitions == 3
        finally:
            await delete_topics(kafka_settings, names, wait=False)


class TestListAndDelete:
    async def test_list_filters_by_prefix_and_hides_internal_topics(self, kafka_settings, catalogue):
        """Listing by prefix gives exactly this test's topics; Kafka's own topics only when asked for."""
        listed = await list_topics(kafka_settings, catalogue.prefix)
        assert listed == sorted(spec.name for spec in catalogue.all())
        everything = await list_topics(kafka_settings, include_internal=True)
        assert set(listed) <= set(everything)
        assert not any(name.startswith("__") for name in await list_topics(kafka_settings))

    async def test_delete_removes_topics_and_ignores_unknown_ones(self, kafka_settings, catalogue):
        """Deleted topics are gone when delete returns; names that never existed are no error."""
        doomed = [catalogue.bookings.name, catalogue.alerts.name, f"{catalogue.prefix}never-created"]
        await delete_topics(kafka_settings, doomed)
        remaining = await list_topics(kafka_settings, catalogue.prefix)
        assert catalogue.bookings.name not in remaining and catalogue.alerts.name not in remaining
        assert len(remaining) == len(catalogue.all()) - 2


class TestUnreachableBroker:
    async def test_no_broker_is_broker_unavailable(self, topic_prefix):
        """With nothing listening on the bootstrap port, apply raises the retriable BrokerUnavailable."""
        settings = Settings(bootstrap_servers=f"127.0.0.1:{free_tcp_port()}")
        with pytest.raises(BrokerUnavailable) as caught:
            await apply_topics(settings, Catalogue.for_prefix(topic_prefix), timeout=5)
        assert caught.value.retriable is True
