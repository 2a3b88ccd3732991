"""The parse stage: raw customs XML -> a typed notification keyed by the ledger key it will be correlated under."""

from __future__ import annotations

import structlog

from streams.contracts.records import notification_record
from streams.domain.ledger import correlation_keys
from streams.errors import XMLRejected
from streams.messages.parse import parse_notification
from streams.pipeline.stage import Emit, Incoming, StageFailure
from streams.pipeline.stages.base import EmittingStage

log = structlog.get_logger(__name__)


class NotificationParser(EmittingStage):
    """Raw customs XML -> a typed notification keyed by the ledger key it will be correlated under."""

    def __call__(self, incoming: Incoming) -> list[Emit]:
        try:
            label = incoming.header("ics2-message-type")
            expected = label.decode(errors="replace") if label else None
            notification = parse_notification(incoming.value, expected_type=expected)
        except XMLRejected as exc:
            party = (incoming.header("ics2-addressee") or b"").decode(errors="replace") or None
            raise StageFailure("decode", f"customs notification rejected: {exc}", party=party, cause=exc) from exc
        keys = correlation_keys(notification)
        if not keys:
            raise StageFailure("process", f"{notification.message_type} names no LRN, MRN, MBL/HBL or referral")
        record = notification_record(notification, incoming.value)
        with structlog.contextvars.bound_contextvars(lrn=notification.lrn, mrn=notification.mrn, mbl=notification.mbl):
            log.info("notification_parsed", message_type=notification.message_type, key=keys[0])
        return [
            self.emit(
                self.catalogue.notifications_parsed.name, keys[0], "CustomsNotification", record, incoming,
                ("ics2-message-type", notification.message_type),
            )
        ]  # fmt: skip
