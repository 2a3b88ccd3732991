"""What the simulator needs from a trader's filing, found by local name so it does not depend on exact nesting.

The renderer of filings and this reader are written apart; matching on local names keeps the simulator usable
while the filing layouts settle, and the pointers it reports are built from where the element really is.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from streams.messages.safe import read_xml

#: Filings and answers the simulator accepts.
FILINGS = ("IE3F12", "IE3F14", "IE3F15", "IE3F16")
ANSWERS = ("IE3R02", "IE3R03")
#: Amendments of registered filings (catalogue: IE3A12 amends an F12, IE3A14 an F14, IE3A15 an F15, IE3A16 an F16).
AMENDMENTS = ("IE3A12", "IE3A14", "IE3A15", "IE3A16")
#: Requests about registered filings: invalidation (IE3Q04) and consultation (IE3Q05).
REQUESTS = ("IE3Q04", "IE3Q05")
HOUSE_FILINGS = ("IE3F14", "IE3F15", "IE3F16", "IE3A14", "IE3A15", "IE3A16")


def _local(name: str) -> str:
    return f"*[local-name()='{name}']"


def _path(*names: str) -> str:
    """An XPath matching ``a/b/c`` anywhere below the root, by local names."""
    return ".//" + "/".join(_local(n) for n in names)


@dataclass(frozen=True, slots=True)
class Found:
    """A value and the XPath (local names, from the root) of the element it came from."""

    value: str
    pointer: str


@dataclass(frozen=True, slots=True)
class FilingFacts:
    """The keys of one filing or answer; a field is None when the filing does not carry it."""

    message_type: str
    lrn: Found | None
    declarant: Found | None
    carrier: Found | None
    mbl: Found | None
    hbl: Found | None
    supplementary_declarant: Found | None
    office: Found | None
    mrn: Found | None
    referral_reference: Found | None
    hs_codes: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()
    functional_reference: Found | None = None
    """The reference an IE3Q04 / IE3Q05 gives itself (an..35); customs quotes it back in its answer."""

    @property
    def filing_type(self) -> str:
        """The filing a filing or amendment is about: ``IE3A15`` and ``IE3F15`` are both about an F15."""
        return f"IE3F{self.message_type[4:]}" if self.message_type in AMENDMENTS else self.message_type

    @property
    def is_house_filing(self) -> bool:
        return self.message_type in HOUSE_FILINGS

    def expected_pointer(self, field: str) -> str:
        """Where a missing value belongs, for the pointer of an IE3N99 'missing' error."""
        house = f"/{self.message_type}/consignmentMasterLevel/consignmentHouseLevel"
        master = house if self.is_house_filing else f"/{self.message_type}/consignmentMasterLevel"
        return {
            "lrn": f"/{self.message_type}/LRN",
            "mrn": f"/{self.message_type}/MRN",
            "declarant": f"/{self.message_type}/declarant/identificationNumber",
            "carrier": f"{master}/carrier/identificationNumber",
            "mbl": f"{master}/transportDocumentMasterLevel/documentNumber",
            "hbl": f"{house}/transportDocumentHouseLevel/documentNumber",
            "supplementary_declarant": f"{house}/supplementaryDeclarant/identificationNumber",
            "referral_reference": f"/{self.message_type}/referralRequestReference",
        }[field]


def _pointer(element: etree._Element) -> str:
    names = [etree.QName(e).localname for e in (element, *element.iterancestors())]
    return "/" + "/".join(reversed(names))


def _find(root: etree._Element, *paths: tuple[str, ...]) -> Found | None:
    """The first non-empty element at the first path that has one."""
    for names in paths:
        for element in root.xpath(_path(*names)):
            text = (element.text or "").strip()
            if text:
                return Found(text, _pointer(element))
    return None


def _texts(root: etree._Element, *names: str) -> tuple[str, ...]:
    return tuple(t for e in root.xpath(_path(*names)) if (t := (e.text or "").strip()))


def read_filing(data: bytes) -> FilingFacts:
    """Read a filing with the hardened reader; ``XMLRejected`` when it is not safe, well-formed ICS2 XML."""
    root = read_xml(data)
    lrn_elements = root.xpath(_local("LRN"))
    lrn = (lrn_elements[0].text or "").strip() if lrn_elements else ""
    return FilingFacts(
        message_type=etree.QName(root).localname,
        lrn=Found(lrn, _pointer(lrn_elements[0])) if lrn else None,
        declarant=_find(root, ("declarant", "identificationNumber"), ("requester", "identificationNumber")),
        carrier=_find(root, ("carrier", "identificationNumber")),
        mbl=_find(
            root,
            ("transportDocumentMasterLevel", "documentNumber"),
            ("transportDocumentMaster", "documentNumber"),
            ("transportDocument", "documentNumber"),
        ),
        hbl=_find(
            root, ("transportDocumentHouseLevel", "documentNumber"), ("transportDocumentHouse", "documentNumber")
        ),
        supplementary_declarant=_find(root, ("supplementaryDeclarant", "identificationNumber")),
        office=_find(root, ("customsOfficeOfFirstEntry", "referenceNumber")),
        mrn=_find(root, ("MRN",)),
        referral_reference=_find(root, ("referralRequestReference",)),
        hs_codes=_texts(root, "harmonizedSystemSubHeadingCode"),
        descriptions=_texts(root, "descriptionOfGoods"),
        functional_reference=_find(root, ("functionalReference",)),
    )
