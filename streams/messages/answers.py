"""What a filer tells customs back after a referral: the typed inputs of IE3R02 (RFI) and IE3R03 (RFS).

Both answer a referral request (IE3Q02 / IE3Q03) by its reference and the filing's MRN; the renderer turns them into
XML. Codes stay strings from the EU code lists (CL703, CL724, CL752, ...), as customs gives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from streams.domain.model import Address


@dataclass(frozen=True, slots=True)
class AnswerText:
    """Free text and/or a coded statement given in answer (``additionalInformation``)."""

    text: str | None = None
    code: str | None = None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A document sent beside the message (over the same channel), named by its identification."""

    identification: str
    filename: str
    mime: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class RfiAnswer:
    """Answer to a request for information (IE3Q02), rendered as IE3R02."""

    mrn: str
    referral_request_reference: str
    declarant_eori: str
    responsible_member_state: str
    issued_at: datetime
    texts: tuple[AnswerText, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    mbl: str | None = None
    """The master B/L the referral named, if any (document type ``master_document_type``)."""
    master_document_type: str = "N704"
    hbl: str | None = None
    """The house B/L the referral named, if any: it makes the answer traceable to the HBL at fault."""


@dataclass(frozen=True, slots=True)
class AuthorizedPerson:
    """The person who screened the cargo."""

    name: str
    eori: str
    type_of_person: int = 2


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    """The screening of one house consignment (``hrcmScreeningResults``)."""

    referral_request_reference: str
    hbl: str
    result: str
    methods: tuple[str, ...]
    """At least two screening methods (CL724)."""
    texts: tuple[AnswerText, ...] = ()
    authorized_person: AuthorizedPerson | None = None
    attachments: tuple[Attachment, ...] = ()
    facility: Address | None = None


@dataclass(frozen=True, slots=True)
class RfsAnswer:
    """Screening results for a request for high-risk cargo screening (IE3Q03), rendered as IE3R03."""

    mrn: str
    declarant_eori: str
    responsible_member_state: str
    issued_at: datetime
    results: tuple[ScreeningResult, ...]
    mbl: str | None = None
    master_document_type: str = "N704"
