"""The customs gateway boundary: what a connector to customs must do, whatever carries the messages.

The connector loop (``streams.gateway.connector``) only ever talks to a ``Gateway``: it hands over each decoded
filing and produces whatever comes back, so a real AS4 access point can replace the simulator or the file drop
without touching the pipeline's agents or the loop. The loop promises a gateway three things:

* ``submit`` and ``poll`` are called from one task, one at a time;
* ``checkpoint`` is called only once every answer returned so far is acknowledged by the broker, and before the
  consumed offsets are committed: it is where a gateway persists state or confirms files, never earlier;
* ``in_doubt`` is asked once, after ``start``: messages a previous run took in but may not have produced.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from streams.errors import DecodeError

HEADER_MESSAGE_TYPE = "ics2-message-type"
HEADER_ADDRESSEE = "ics2-addressee"
HEADER_MESSAGE_ID = "ics2-message-id"
"""Identity of an inbound message, so a restarted connector and downstream stages can recognise a repeat."""

_MESSAGE_TYPE = re.compile(r"^IE3[A-Z][0-9]{2}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class OutboundFiling:
    """The essentials of one ``Filing`` record that a gateway needs to lodge it with customs."""

    message_id: str
    message_type: str
    lrn: str
    mbl: str
    hbl: str | None
    filer_party_id: str
    filer_eori: str
    xml: bytes

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OutboundFiling:
        """Read a decoded ``Filing`` record; ``DecodeError`` when it is unusable or its XML does not match its hash.

        The hash check catches a record whose XML was altered after rendering: what the audit trail holds must be
        what customs receives.
        """
        try:
            filing = cls(
                message_id=str(record["message_id"]),
                message_type=str(record["message_type"]),
                lrn=str(record["lrn"]),
                mbl=str(record["mbl"]),
                hbl=None if record.get("hbl") is None else str(record["hbl"]),
                filer_party_id=str(record["filer_party_id"]),
                filer_eori=str(record["filer_eori"]),
                xml=bytes(record["xml"]),
            )
            expected = str(record["xml_sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"not a usable Filing record: {exc!r}") from exc
        if not _MESSAGE_TYPE.match(filing.message_type):
            raise DecodeError(f"message type {filing.message_type!r} is not an ICS2 message code")
        if not filing.message_id or not filing.lrn:
            raise DecodeError("a filing needs a message id and an LRN")
        if not _SHA256.match(expected) or hashlib.sha256(filing.xml).hexdigest() != expected:
            raise DecodeError(f"the XML of {filing.message_type} {filing.lrn} does not match its xml_sha256")
        return filing


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One answer from customs, byte for byte, and whom it is for.

    ``addressee`` is an EORI, or the empty string when the gateway cannot tell: such a message is produced with
    an empty key and no ``ics2-addressee`` header, and routing downstream decides from its content.
    """

    addressee: str
    message_type: str
    xml: bytes
    message_id: str | None = None

    @property
    def key(self) -> bytes:
        return self.addressee.encode("utf-8")

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers of the record on the inbound topic."""
        headers = [(HEADER_MESSAGE_TYPE, self.message_type.encode("utf-8"))]
        if self.addressee:
            headers.append((HEADER_ADDRESSEE, self.key))
        if self.message_id:
            headers.append((HEADER_MESSAGE_ID, self.message_id.encode("utf-8")))
        return headers


@dataclass(frozen=True, slots=True)
class InDoubt:
    """Messages a previous run took in but may have died before producing, and since when (wall clock).

    The loop looks for their ``message_id`` on the inbound topic from ``since`` on, produces those it does not
    find and then calls ``checkpoint``; every in-doubt message must carry a ``message_id``.
    """

    messages: tuple[InboundMessage, ...] = ()
    since: datetime | None = None


@runtime_checkable
class Gateway(Protocol):
    """A connector to customs: lodges filings, hands back customs' answers."""

    name: str

    async def start(self) -> None:
        """Connect, restore state; called once before anything else."""

    async def stop(self) -> None:
        """Release what ``start`` took; the loop has already checkpointed what was produced."""

    async def submit(self, filing: OutboundFiling, now: datetime) -> Sequence[InboundMessage]:
        """Lodge one filing; answers customs gives at once are returned, later ones come from ``poll``.

        A non-retriable ``ICS2StreamsError`` means this filing can never be lodged (it is dead-lettered); a
        retriable one means try again later.
        """
        ...

    async def poll(self, now: datetime) -> Sequence[InboundMessage]:
        """Answers that time triggers or that arrived from outside since the last call."""
        ...

    async def checkpoint(self) -> None:
        """Everything returned so far is on the broker: persist state, confirm picked-up input."""

    async def in_doubt(self) -> InDoubt:
        """What a previous run may have taken in without producing (see ``InDoubt``)."""
        ...
