"""The only door through which XML from outside enters the project.

Customs' notifications and trader filings arrive from networks we do not control, so the reader refuses anything
that could make lxml reach out (external entities, DTDs, XInclude) or blow up (entity expansion, huge documents)
before the document becomes a tree. Every refusal is an ``XMLRejected`` that says why, so a stage can dead-letter
the input with a readable reason.
"""

from __future__ import annotations

import re

from lxml import etree

from streams.errors import XMLRejected
from streams.messages import NS

DEFAULT_MAX_BYTES = 2_000_000
"""THE size limit of inbound XML, checked here before any parsing: large enough for an IE3F15 with thousands of
goods items, so anything larger is not an ICS2 message. The inbound topic deliberately takes more
(``streams.topics.INBOUND_MAX_MESSAGE_BYTES``), so that an oversize message is dead-lettered with its bytes and
its reason by the parse stage, rather than refused at the broker where only the producer would hear of it."""

_DTD_MARKERS = re.compile(rb"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _parser() -> etree.XMLParser:
    """A fresh parser per call: lxml parsers keep error logs and are not safe to share across threads."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
        collect_ids=False,
    )


def read_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, namespace: str | None = NS) -> etree._Element:
    """Parse untrusted XML bytes into an element tree, or raise ``XMLRejected`` with the reason.

    ``namespace`` is the namespace the root element must be in (ICS2's by default); ``None`` accepts any.
    """
    if not isinstance(data, bytes | bytearray):
        raise XMLRejected(f"XML must be given as bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise XMLRejected(f"XML of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not data.strip():
        raise XMLRejected("XML is empty")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise XMLRejected("XML must be UTF-8; a UTF-16 byte order mark was found")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XMLRejected(f"XML is not valid UTF-8 (byte {exc.start})") from exc
    declared = _DECLARED_ENCODING.match(data.removeprefix(b"\xef\xbb\xbf"))
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise XMLRejected(f"XML declares encoding {declared.group(1).decode('ascii')!r}; only UTF-8 is accepted")
    marker = _DTD_MARKERS.search(data)
    if marker:
        raise XMLRejected(f"XML contains <!{marker.group(1).decode('ascii')}: DTDs are not accepted")
    try:
        root = etree.fromstring(data, _parser())
    except (etree.LxmlError, ValueError) as exc:
        raise XMLRejected(f"XML is not well-formed: {exc}") from exc
    if root is None:
        raise XMLRejected("XML has no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XMLRejected("XML carries a document type declaration: DTDs are not accepted")
    if namespace is not None:
        actual = etree.QName(root).namespace
        if actual != namespace:
            raise XMLRejected(
                f"root element {etree.QName(root).localname} is in namespace {actual!r}, expected {namespace!r}"
            )
    return root
