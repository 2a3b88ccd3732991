"""The file-drop connector: filings go to an outbox folder, customs' answers are picked up from an inbox folder.

This is how many service providers integrate: their own AS4 client sends what appears in the outbox and drops
what customs answers into the inbox.

Outbox: each filing is written to ``<outbox>/<message_type>_<lrn>.xml`` atomically (a hidden temporary name in
the same folder, flushed to disk, then renamed), so the provider's client never sees half a file. A redelivered
filing rewrites the same name with the same bytes.

Inbox: only ``*.xml`` files are taken; whoever writes there must also write under another name and rename. Each
file is read with the hardened reader. A file it refuses goes to ``<inbox>/rejected/`` with ``<name>.reason.txt``
beside it, and is never retried. A usable file is first claimed (renamed into ``<inbox>/processing/``), then
returned to the loop; when the loop's ``checkpoint`` says its record is on the broker, it moves to
``<inbox>/processed/``.

Guarantee: every usable file is produced, and a crash does not produce it twice. A crash after the claim and
before the move leaves it in ``processing/``; on the next start it is *in doubt*, and the loop looks for its
``ics2-message-id`` (the SHA-256 of the file's bytes) on the inbound topic from the time of the claim on,
producing it only if it is not there. Two files with identical bytes are the same notification and count once
in that check.

Addressee: the ``identificationNumber`` of the root's ``declarant``, else its ``supplementaryDeclarant``, else its
``carrier`` (IE3N04, IE3N05 and the like name only the carrier). When none is there the addressee is the empty
string: the record gets an empty key and no ``ics2-addressee`` header, and routing decides from the content.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog
from lxml import etree

from streams.errors import DecodeError, XMLRejected
from streams.gateway.base import InboundMessage, InDoubt, OutboundFiling
from streams.messages.safe import DEFAULT_MAX_BYTES, read_xml

log = structlog.get_logger(__name__)

PROCESSING, PROCESSED, REJECTED = "processing", "processed", "rejected"
REASON_SUFFIX = ".reason.txt"
_SAFE_LRN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,34}$")
"""An LRN is an..22 in ICS2; this admits a little more, but nothing that can leave the folder or hide the file."""
_MESSAGE_TYPE = re.compile(r"^IE3[A-Z][0-9]{2}$")
#: Where the addressee's EORI is looked for, in order: direct children of the root element.
ADDRESSEE_ELEMENTS = ("declarant", "supplementaryDeclarant", "carrier")


def outbox_name(message_type: str, lrn: str) -> str:
    """``<message_type>_<lrn>.xml``; refuses names that could leave the folder or hide the file."""
    if not _MESSAGE_TYPE.match(message_type) or not _SAFE_LRN.match(lrn):
        raise DecodeError(f"{message_type} {lrn!r} cannot name a file in the outbox")
    return f"{message_type}_{lrn}.xml"


def write_atomically(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` so that readers see either no file or the whole file."""
    target = folder / name
    temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    _sync_folder(folder)
    return target


def _sync_folder(folder: Path) -> None:
    """Make a rename durable: the folder's entry must reach the disk too."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>.<n><suffix>`` when a file of that name is already there."""
    candidate = folder / name
    counter = 1
    while candidate.exists():
        candidate = folder / f"{Path(name).stem}.{counter}{Path(name).suffix}"
        counter += 1
    return candidate


def addressee_of(root: etree._Element) -> str:
    """The EORI the message is for, found by local names among the root's children (see the module docstring)."""
    for wanted in ADDRESSEE_ELEMENTS:
        for child in root:
            if not isinstance(child.tag, str) or etree.QName(child).localname != wanted:
                continue
            for number in child:
                if isinstance(number.tag, str) and etree.QName(number).localname == "identificationNumber":
                    text = (number.text or "").strip()
                    if text:
                        return text
    return ""


def read_notification(data: bytes) -> InboundMessage:
    """An inbound message from the bytes of one dropped file; ``XMLRejected`` when it is not a usable one."""
    root = read_xml(data)
    message_type = etree.QName(root).localname
    if not _MESSAGE_TYPE.match(message_type):
        raise XMLRejected(f"root element {message_type} is not an ICS2 message")
    return InboundMessage(
        addressee=addressee_of(root),
        message_type=message_type,
        xml=data,
        message_id=hashlib.sha256(data).hexdigest(),
    )


class FileDropGateway:
    """Filings to ``outbox``, answers from ``inbox``; see the module docstring for the folders and guarantees."""

    name = "files"

    def __init__(self, outbox: Path, inbox: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.outbox = Path(outbox)
        self.inbox = Path(inbox)
        self.max_bytes = max_bytes
        self._claimed: list[Path] = []

    @property
    def processing(self) -> Path:
        return self.inbox / PROCESSING

    @property
    def processed(self) -> Path:
        return self.inbox / PROCESSED

    @property
    def rejected(self) -> Path:
        return self.inbox / REJECTED

    async def start(self) -> None:
        for folder in (self.outbox, self.inbox, self.processing, self.processed, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        """Nothing to release; claimed files left in ``processing/`` are settled by the next start."""

    async def submit(self, filing: OutboundFiling, now: datetime) -> Sequence[InboundMessage]:
        """Write the filing to the outbox; customs answers later, through the inbox."""
        path = write_atomically(self.outbox, outbox_name(filing.message_type, filing.lrn), filing.xml)
        log.info("filing_dropped", file=path.name, bytes=len(filing.xml))
        return ()

    async def poll(self, now: datetime) -> Sequence[InboundMessage]:
        """Claim every usable ``*.xml`` of the inbox, oldest name first; refuse the unusable ones."""
        out: list[InboundMessage] = []
        for path in sorted(self.inbox.glob("*.xml")):
            if not path.is_file():
                continue
            message = self._read(path)
            if message is None:
                continue
            claimed = self.processing / path.name
            os.replace(path, claimed)
            self._claimed.append(claimed)
            out.append(message)
            log.info("notification_picked_up", file=path.name, message_type=message.message_type)
        if out:
            _sync_folder(self.processing)
        return out

    async def checkpoint(self) -> None:
        """The claimed files' records are on the broker: move them to ``processed/``."""
        for claimed in self._claimed:
            if claimed.exists():
                os.replace(claimed, _free_name(self.processed, claimed.name))
        if self._claimed:
            _sync_folder(self.processed)
        self._claimed.clear()

    async def in_doubt(self) -> InDoubt:
        """Files a previous run claimed and did not confirm; they are claimed again for this run's checkpoint."""
        messages: list[InboundMessage] = []
        since: float | None = None
        for path in sorted(self.processing.glob("*.xml")):
            message = self._read(path)
            if message is None:
                continue
            claimed_at = path.stat().st_ctime
            since = claimed_at if since is None else min(since, claimed_at)
            self._claimed.append(path)
            messages.append(message)
        if messages:
            log.warning("notifications_in_doubt", files=len(messages))
        return InDoubt(tuple(messages), None if since is None else datetime.fromtimestamp(since, UTC))

    def _read(self, path: Path) -> InboundMessage | None:
        """The message in ``path``, or None after moving the file to ``rejected/`` with the reason."""
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise XMLRejected(f"file of {size} bytes exceeds the limit of {self.max_bytes} bytes")
            return read_notification(path.read_bytes())
        except FileNotFoundError:
            return None
        except (XMLRejected, OSError) as exc:
            self._reject(path, str(exc))
            return None

    def _reject(self, path: Path, reason: str) -> None:
        """Move a refused file aside with its reason; if even that fails, leave it and say so (never crash)."""
        try:
            target = _free_name(self.rejected, path.name)
            os.replace(path, target)
            write_atomically(self.rejected, target.name + REASON_SUFFIX, (reason + "\n").encode("utf-8"))
        except OSError as exc:
            log.error("notification_not_movable", file=path.name, reason=reason, error=str(exc))
            return
        log.warning("notification_rejected", file=path.name, reason=reason)
