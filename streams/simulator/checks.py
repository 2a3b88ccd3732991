"""The customs-grade checks of the simulator: what real customs rejects with an IE3N99 although the XML is well formed.

Pure: the filing's XML in, the errors customs would list out (empty when it passes). Each error carries the CL723
code and the pointer (the element path from the root, with a 1-based index where siblings share a name) of the
element at fault, as the IE3N99 table wants (``error/validationCode``, ``error/pointer/messageElementPath``):

- HTI rule R3002 on every address group: a street with its house number, or a P.O. box (13, missing);
- a filer that is not identified by an EU EORI (declarant, representative, supplementary declarant; XI, Northern
  Ireland, is EU for ICS2; HTI rule R3005) (12, incorrect value);
- an F12 that names no house filer (``consignmentMasterLevel/supplementaryDeclarant``) (13, missing);
- a coded value outside its code list: CL116 method of payment, CL094 representative status, CL729 type of person,
  CL745 supplementary filing type (1 on the F12, 2 on the F14) (12, incorrect value).

Decisions without a public source: the codes follow UN/EDIFACT 9321 as the rest of the simulator does (12 incorrect
value, 13 missing); R3002 points at the address group; a supplementary filing type that is in CL745 but not the one
of its message (1 on an F14) is an incorrect value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from lxml import etree

from streams.domain.notifications import NotificationError
from streams.domain.rules import (
    EU_EORI_PREFIXES,
    PAYMENT_METHODS,
    REPRESENTATIVE_STATUSES,
    SUPPLEMENTARY_FILING_TYPES,
    TYPES_OF_PERSON,
)
from streams.messages.safe import read_xml

INCORRECT, MISSING = "12", "13"

#: Groups whose ``identificationNumber`` names a party that files (or files through a representative).
FILER_GROUPS = ("declarant", "representative", "supplementaryDeclarant")

#: Coded elements checked against their list: element name -> (code list, codes).
CODED: Mapping[str, tuple[str, Mapping[object, str]]] = {
    "methodOfPayment": ("CL116", PAYMENT_METHODS),
    "status": ("CL094", REPRESENTATIVE_STATUSES),
    "typeOfPerson": ("CL729", {str(k): v for k, v in TYPES_OF_PERSON.items()}),
    "supplementaryFilingType": ("CL745", SUPPLEMENTARY_FILING_TYPES),
}

#: The CL745 code a supplementary declarant has on each message: house filers on the F12, the F16 filer on the F14.
FILING_TYPE_OF_MESSAGE = {"IE3F12": "1", "IE3F14": "2"}
#: An amendment carries the whole content of the filing it amends, so it is checked as that filing.
AMENDED_FILING = {"IE3A12": "IE3F12", "IE3A14": "IE3F14", "IE3A15": "IE3F15", "IE3A16": "IE3F16"}


def customs_grade_errors(filing_xml: bytes) -> list[NotificationError]:
    """Every error customs would list for this filing; ``XMLRejected`` when it is not safe, well-formed XML."""
    root = read_xml(filing_xml)
    name = etree.QName(root).localname
    message = AMENDED_FILING.get(name, name)
    return [
        *_addresses(root),
        *_filer_eoris(root),
        *_house_filers(root, message),
        *_codes(root, message),
    ]


def _elements(root: etree._Element, name: str) -> Iterator[etree._Element]:
    """Elements of this local name anywhere in the filing, in document order."""
    return (e for e in root.iter(etree.Element) if etree.QName(e).localname == name)


def _child_text(element: etree._Element, name: str) -> str:
    for child in element:
        if etree.QName(child).localname == name:
            return (child.text or "").strip()
    return ""


def pointer(element: etree._Element) -> str:
    """The element's path from the root by local names, ``[n]`` (1-based) where siblings share its name."""
    steps: list[str] = []
    current: etree._Element | None = element
    while current is not None:
        name = etree.QName(current).localname
        parent = current.getparent()
        if parent is not None:
            same = [c for c in parent if etree.QName(c).localname == name]
            if len(same) > 1:
                name = f"{name}[{same.index(current) + 1}]"
        steps.append(name)
        current = parent
    return "/" + "/".join(reversed(steps))


def _addresses(root: etree._Element) -> Iterator[NotificationError]:
    """R3002: every address of a party has a street with its number, or a P.O. box."""
    for address in _elements(root, "address"):
        if _child_text(address, "poBox"):
            continue
        if _child_text(address, "street") and _child_text(address, "number"):
            continue
        owner = etree.QName(address.getparent()).localname
        yield NotificationError(
            MISSING,
            pointer(address),
            f"R3002: the address of the {owner} has neither a street with a house number nor a P.O. box",
        )


def _filer_eoris(root: etree._Element) -> Iterator[NotificationError]:
    """R3005: declarant, representative and supplementary declarants file with an EU EORI (XI included)."""
    for group in FILER_GROUPS:
        for element in _elements(root, group):
            for child in element:
                if etree.QName(child).localname != "identificationNumber":
                    continue
                eori = (child.text or "").strip()
                if eori[:2] not in EU_EORI_PREFIXES:
                    yield NotificationError(
                        INCORRECT,
                        pointer(child),
                        f"R3005: {eori!r} is not an EORI of the EU: the {group} cannot file with it",
                    )


def _house_filers(root: etree._Element, message: str) -> Iterator[NotificationError]:
    """An F12 names its house filers, so that customs expects their F15 or F14."""
    if message != "IE3F12":
        return
    master = next(_elements(root, "consignmentMasterLevel"), None)
    named = [] if master is None else [c for c in master if etree.QName(c).localname == "supplementaryDeclarant"]
    if not named:
        where = "/IE3F12/consignmentMasterLevel" if master is None else pointer(master)
        yield NotificationError(
            MISSING, f"{where}/supplementaryDeclarant", "the F12 names no house filer (supplementary declarant)"
        )


def _codes(root: etree._Element, message: str) -> Iterator[NotificationError]:
    """Coded values come from their code list; the supplementary filing type is the one of its message."""
    for name, (code_list, codes) in CODED.items():
        for element in _elements(root, name):
            value = (element.text or "").strip()
            if value not in codes:
                yield NotificationError(INCORRECT, pointer(element), f"{value!r} is not a code of {code_list}")
            elif name == "supplementaryFilingType" and FILING_TYPE_OF_MESSAGE.get(message, value) != value:
                expected = FILING_TYPE_OF_MESSAGE[message]
                yield NotificationError(
                    INCORRECT,
                    pointer(element),
                    f"on an {message} the supplementary filing type is {expected} ({codes[expected]}), not {value}",
                )
