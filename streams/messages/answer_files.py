"""An answer file (JSON) -> the typed IE3R02 / IE3R03 message, completed with what the ledger knows, and its XML."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.domain.answers import MESSAGE_TYPES, AnswerRejected
from streams.domain.ledger import FilingRecord
from streams.domain.model import Address
from streams.errors import RenderError
from streams.messages.answers import AnswerText, Attachment, AuthorizedPerson, RfiAnswer, RfsAnswer, ScreeningResult
from streams.messages.render import render_rfi_answer, render_rfs_answer


def build_answer(
    kind: str, reference: str, answer: Mapping[str, Any], record: FilingRecord, issued_at: datetime
) -> RfiAnswer | RfsAnswer:
    """The typed answer: the file's content completed with what the ledger knows of the referred filing."""
    if kind not in MESSAGE_TYPES:
        raise AnswerRejected(f"answer kind {kind!r} is not one of {', '.join(MESSAGE_TYPES)}")
    if not isinstance(answer, Mapping):
        raise AnswerRejected("the answer file must hold a JSON object")
    if record.mrn is None:
        raise AnswerRejected(f"the filing referred to by {reference} has no MRN yet")
    declarant = next((eori for eori, party in record.eoris.items() if party == record.filer), None)
    if declarant is None:
        raise AnswerRejected(f"no EORI known for the filer {record.filer}: it cannot be the answer's declarant")
    common: dict[str, Any] = {
        "mrn": record.mrn,
        "declarant_eori": declarant,
        "responsible_member_state": record.mrn[2:4],
        "issued_at": issued_at,
        "mbl": record.mbl,
    }
    try:
        if kind == "rfi":
            _only(answer, {"texts", "attachments"}, "RFI answer")
            texts = tuple(_text(t) for t in _list(answer, "texts"))
            attachments = tuple(_attachment(a) for a in _list(answer, "attachments"))
            if not texts and not attachments:
                raise AnswerRejected("an RFI answer needs at least one text or attachment")
            return RfiAnswer(
                **common, referral_request_reference=reference, texts=texts, attachments=attachments, hbl=record.hbl
            )
        _only(answer, {"results"}, "RFS answer")
        results = tuple(_screening(r, reference, record.hbl) for r in _list(answer, "results"))
        if not results:
            raise AnswerRejected("an RFS answer needs at least one screening result")
        return RfsAnswer(**common, results=results)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnswerRejected(f"the {kind.upper()} answer file is not usable: {exc!r}") from exc


def render_answer(answer: RfiAnswer | RfsAnswer) -> bytes:
    """IE3R02 / IE3R03, XSD-validated; a refusal becomes ``AnswerRejected`` (the party must fix its file)."""
    try:
        return render_rfi_answer(answer) if isinstance(answer, RfiAnswer) else render_rfs_answer(answer)
    except RenderError as exc:
        raise AnswerRejected(f"customs would refuse this answer: {exc}") from exc


def _only(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise AnswerRejected(f"{what} has unknown fields {unknown}; allowed: {sorted(allowed)}")


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise AnswerRejected(f"{name} must be a list")
    return value


def _text(data: Mapping[str, Any]) -> AnswerText:
    _only(data, {"text", "code", "type"}, "a text")
    text = AnswerText(text=data.get("text"), code=data.get("code"), type=data.get("type"))
    if not (text.text or text.code):
        raise AnswerRejected("a text needs text or code")
    return text


def _attachment(data: Mapping[str, Any]) -> Attachment:
    _only(data, {"identification", "filename", "mime", "description"}, "an attachment")
    return Attachment(data["identification"], data["filename"], data["mime"], data.get("description"))


def _screening(data: Mapping[str, Any], reference: str, hbl: str | None) -> ScreeningResult:
    allowed = {"result", "methods", "texts", "authorized_person", "attachments", "facility", "hbl"}
    _only(data, allowed, "a screening result")
    house = data.get("hbl") or hbl
    if house is None:
        raise AnswerRejected("a screening result needs the HBL screened and the referral names none")
    person = data.get("authorized_person")
    facility = data.get("facility")
    return ScreeningResult(
        referral_request_reference=reference,
        hbl=house,
        result=str(data["result"]),
        methods=tuple(str(m) for m in data["methods"]),
        texts=tuple(_text(t) for t in _list(data, "texts")),
        authorized_person=None
        if person is None
        else AuthorizedPerson(person["name"], person["eori"], int(person.get("type_of_person", 2))),
        attachments=tuple(_attachment(a) for a in _list(data, "attachments")),
        facility=None
        if facility is None
        else Address(
            facility["street"],
            facility["city"],
            facility.get("postcode"),
            facility["country"],
            number=facility.get("number"),
            po_box=facility.get("po_box"),
            sub_division=facility.get("sub_division"),
        ),
    )
