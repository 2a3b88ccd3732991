"""Answers to customs' referrals: IE3R02 (information requested by an RFI) and IE3R03 (screening results of an RFS).

Both quote the filing's MRN and the referral request reference, so customs can tie the answer to its request; the
house B/L named in the answer keeps it traceable to the HBL at fault.
"""

from __future__ import annotations

from lxml import etree

from streams.domain.dates import format_datetime
from streams.messages.answers import AnswerText, Attachment, RfiAnswer, RfsAnswer, ScreeningResult
from streams.messages.render_common import (
    HOUSE_BILL_TYPE,
    address_block,
    finish,
    identified,
    new_root,
    sub,
    transport_document,
)


def _texts(parent: etree._Element, texts: tuple[AnswerText, ...]) -> None:
    for text in texts:
        block = sub(parent, "additionalInformation")
        if text.code:
            sub(block, "code", text.code)
        if text.text:
            sub(block, "text", text.text)
        if text.type:
            sub(block, "type", text.type)


def _attachments(parent: etree._Element, name: str, attachments: tuple[Attachment, ...]) -> None:
    for attachment in attachments:
        block = sub(parent, name)
        sub(block, "identification", attachment.identification)
        sub(block, "filename", attachment.filename)
        sub(block, "MIME", attachment.mime)
        if attachment.description:
            sub(block, "description", attachment.description)


def _answer_header(root: etree._Element, answer: RfiAnswer | RfsAnswer) -> None:
    sub(root, "documentIssueDate", format_datetime(answer.issued_at))
    sub(root, "MRN", answer.mrn)
    sub(sub(root, "responsibleMemberState"), "country", answer.responsible_member_state)
    if answer.mbl:
        transport_document(root, "transportDocument", answer.mbl, answer.master_document_type)
    identified(root, "declarant", answer.declarant_eori)


def render_rfi(answer: RfiAnswer) -> bytes:
    root = new_root("IE3R02")
    _answer_header(root, answer)
    response = sub(root, "additionalInformationResponse")
    sub(response, "referralRequestReference", answer.referral_request_reference)
    _texts(response, answer.texts)
    _attachments(response, "binaryAttachment", answer.attachments)
    if answer.hbl:
        transport_document(response, "transportDocumentHouseLevel", answer.hbl, HOUSE_BILL_TYPE)
    where = f"IE3R02 for MRN {answer.mrn} (referral {answer.referral_request_reference})"
    return finish(root, "IE3R02", where)


def _screening(parent: etree._Element, result: ScreeningResult) -> None:
    block = sub(parent, "hrcmScreeningResults")
    sub(block, "referralRequestReference", result.referral_request_reference)
    sub(block, "result", result.result)
    for method in result.methods:
        sub(sub(block, "screeningMethod"), "method", method)
    _texts(block, result.texts)
    if result.authorized_person:
        person = sub(block, "authorizedPerson")
        sub(person, "name", result.authorized_person.name)
        sub(person, "identificationNumber", result.authorized_person.eori)
        sub(person, "typeOfPerson", result.authorized_person.type_of_person)
    _attachments(block, "binaryFile", result.attachments)
    if result.facility:
        address_block(sub(block, "facilityPlace"), "address", result.facility)
    transport_document(block, "transportDocumentHouseLevel", result.hbl, HOUSE_BILL_TYPE)


def render_rfs(answer: RfsAnswer) -> bytes:
    root = new_root("IE3R03")
    _answer_header(root, answer)
    for result in answer.results:
        _screening(root, result)
    hbls = ", ".join(r.hbl for r in answer.results) or "no HBL"
    return finish(root, "IE3R03", f"IE3R03 for MRN {answer.mrn} ({hbls})")
