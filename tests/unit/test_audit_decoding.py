"""A fetch decoded in one pass gives the records of per-message decoding, or hands every message back to it."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from streams.audit.decoding import BatchDecoder, _long
from streams.contracts.avro import HEADER_SIZE, MARKER, SchemaCatalogue, single_object_fingerprint
from streams.errors import DecodeError
from tests.unit.test_audit_trail import SIGNER, build_chain

SCHEMAS = SchemaCatalogue.load()


def messages() -> list[bytes]:
    """Signed and unsigned records, non-ASCII text included."""
    records = build_chain([("OCLU27DEC0001", "é ü 漢"), ("OCLU27DEC0002", "b"), ("OCLU27DEC0001", "c")], SIGNER)
    records += build_chain([("OCLU27DEC0003", "unsigned")])
    return [SCHEMAS.encode("AuditRecord", r) for r in records]


def one_by_one(values: list[Any]) -> list[dict[str, Any]]:
    return [SCHEMAS.decode(v, reader="AuditRecord").record for v in values]


class TestBatchDecoder:
    def test_gives_the_records_of_per_message_decoding(self):
        values = messages()
        decoded = BatchDecoder(SCHEMAS).decode(values)
        assert decoded == one_by_one(values) and len(decoded) == 4
        assert all(list(r) == list(one_by_one(values)[0]) for r in decoded)

    def test_empty_fetch(self):
        assert BatchDecoder(SCHEMAS).decode([]) == []

    @pytest.mark.parametrize("value", [-(2**63), -65, -1, 0, 1, 63, 64, 300, 2**40, 2**63 - 1])
    def test_long_is_avro_zigzag_varint(self, value: int):
        assert schemaless_reader(io.BytesIO(_long(value)), "long", None) == value

    def test_bytes_left_over_or_missing_in_one_message_hand_the_fetch_back(self):
        values = messages()
        for bad in (values[1] + b"\x00", values[1][:-1]):
            fetch = [values[0], bad, values[2]]
            assert BatchDecoder(SCHEMAS).decode(fetch) is None
            with pytest.raises(DecodeError):
                one_by_one(fetch)

    def test_a_cut_message_followed_by_one_with_extra_bytes_is_not_read_across(self):
        """The bytes cut from one body are added to the next: the fetch is as long as before and every record
        boundary but two is in place, which only the canary after each body shows."""
        values = messages()
        cut, extra = values[1][:-3], values[1][-3:] + values[2]
        assert len(cut) + len(extra) == len(values[1]) + len(values[2])
        assert BatchDecoder(SCHEMAS).decode([values[0], cut, extra, values[3]]) is None
        with pytest.raises(DecodeError):
            one_by_one([cut])

    def test_older_writer_schemas_and_other_values_are_decoded_one_by_one(self):
        values = messages()
        versions = SCHEMAS.versions("AuditRecord")
        oldest = versions[min(versions)]
        body = io.BytesIO()
        record = {k: v for k, v in one_by_one(values[:1])[0].items() if k in {f["name"] for f in oldest["fields"]}}
        schemaless_writer(body, oldest, record)
        older = MARKER + single_object_fingerprint(oldest) + body.getvalue()
        assert one_by_one([older])[0]["hash"] == record["hash"]
        for other in (older, b"not avro", None, bytearray(values[0]), values[0][:HEADER_SIZE]):
            assert BatchDecoder(SCHEMAS).decode([values[0], other]) is None
