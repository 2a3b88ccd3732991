"""ACL and SCRAM administration over the Kafka protocol, on top of aiokafka's connection and wire types.

Why not a library call: aiokafka 0.14's admin client has neither ACL nor SCRAM methods, and its ACL request
classes stop at versions that Kafka 4 removed (KIP-896: CreateAcls and DeleteAcls v0-v1). Running the Kafka
admin tools instead would cost a JVM start per call and the extra ``kafka-tools`` jar; a second client library
(confluent-kafka) would bring librdkafka into the venv for five requests. So this module declares the five
flexible request versions Kafka 4 speaks (CreateAcls v3, DescribeAcls v3, DeleteAcls v3,
DescribeUserScramCredentials v0, AlterUserScramCredentials v0) with aiokafka's own protocol types and sends them
through the admin client's connection, which already handles SASL and TLS.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import CompactArray, CompactBytes, CompactString, Int8, Int16, Int32, Schema, TaggedFields

from streams.errors import PlatformError
from streams.security.acls import Grant

#: Wire codes of the enums the requests carry (org.apache.kafka.common.acl / resource / ScramMechanism).
RESOURCE_TYPE_CODES = {"any": 1, "topic": 2, "group": 3, "cluster": 4, "transactional_id": 5}
PATTERN_CODES = {"any": 1, "literal": 3, "prefixed": 4}
OPERATION_CODES = {
    "Any": 1,
    "All": 2,
    "Read": 3,
    "Write": 4,
    "Create": 5,
    "Delete": 6,
    "Alter": 7,
    "Describe": 8,
    "ClusterAction": 9,
    "DescribeConfigs": 10,
    "AlterConfigs": 11,
    "IdempotentWrite": 12,
}
PERMISSION_CODES = {"Any": 1, "Deny": 2, "Allow": 3}
SCRAM_SHA_512 = 2
#: Kafka refuses fewer than 4096 iterations; 8192 is the broker tools' default for SHA-512.
SCRAM_ITERATIONS = 8192
ANY_HOST = "*"

_NAMES = {
    "resource_type": {code: name for name, code in RESOURCE_TYPE_CODES.items()},
    "pattern": {code: name for name, code in PATTERN_CODES.items()},
    "operation": {code: name for name, code in OPERATION_CODES.items()},
    "permission": {code: name for name, code in PERMISSION_CODES.items()},
}
_STR = CompactString("utf-8")
_TAGS = ("tags", TaggedFields)


class SecurityAdminError(PlatformError):
    """The broker refused an ACL or credential change (not authorised, bad request, unsupported)."""


class _CreateAclsResponse(Response):
    API_KEY = 30
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(("error_code", Int16), ("error_message", _STR), _TAGS)),
        _TAGS,
    )


class _CreateAclsStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 30
    API_VERSION = 3
    RESPONSE_TYPE = _CreateAclsResponse
    SCHEMA = Schema(
        (
            "creations",
            CompactArray(
                ("resource_type", Int8),
                ("resource_name", _STR),
                ("pattern_type", Int8),
                ("principal", _STR),
                ("host", _STR),
                ("operation", Int8),
                ("permission_type", Int8),
                _TAGS,
            ),
        ),
        _TAGS,
    )


_ACL_FILTER = (
    ("resource_type", Int8),
    ("resource_name", _STR),
    ("pattern_type", Int8),
    ("principal", _STR),
    ("host", _STR),
    ("operation", Int8),
    ("permission_type", Int8),
)


class _DescribeAclsResponse(Response):
    API_KEY = 29
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", _STR),
        (
            "resources",
            CompactArray(
                ("resource_type", Int8),
                ("resource_name", _STR),
                ("pattern_type", Int8),
                (
                    "acls",
                    CompactArray(
                        ("principal", _STR), ("host", _STR), ("operation", Int8), ("permission_type", Int8), _TAGS
                    ),
                ),
                _TAGS,
            ),
        ),
        _TAGS,
    )


class _DescribeAclsStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 29
    API_VERSION = 3
    RESPONSE_TYPE = _DescribeAclsResponse
    SCHEMA = Schema(*_ACL_FILTER, _TAGS)


class _DeleteAclsResponse(Response):
    API_KEY = 31
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "filter_results",
            CompactArray(
                ("error_code", Int16),
                ("error_message", _STR),
                (
                    "matching_acls",
                    CompactArray(("error_code", Int16), ("error_message", _STR), *_ACL_FILTER, _TAGS),
                ),
                _TAGS,
            ),
        ),
        _TAGS,
    )


class _DeleteAclsStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 31
    API_VERSION = 3
    RESPONSE_TYPE = _DeleteAclsResponse
    SCHEMA = Schema(("filters", CompactArray(*_ACL_FILTER, _TAGS)), _TAGS)


class _DescribeScramResponse(Response):
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", _STR),
        (
            "results",
            CompactArray(
                ("user", _STR),
                ("error_code", Int16),
                ("error_message", _STR),
                ("credential_infos", CompactArray(("mechanism", Int8), ("iterations", Int32), _TAGS)),
                _TAGS,
            ),
        ),
        _TAGS,
    )


class _DescribeScramStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = _DescribeScramResponse
    SCHEMA = Schema(("users", CompactArray(("name", _STR), _TAGS)), _TAGS)


class _AlterScramResponse(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(("user", _STR), ("error_code", Int16), ("error_message", _STR), _TAGS)),
        _TAGS,
    )


class _AlterScramStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse
    SCHEMA = Schema(
        ("deletions", CompactArray(("name", _STR), ("mechanism", Int8), _TAGS)),
        (
            "upsertions",
            CompactArray(
                ("name", _STR),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                _TAGS,
            ),
        ),
        _TAGS,
    )


class _Fixed(Request[Any]):
    """A request with one version only: the struct is built up front and offered as is."""

    API_KEY: ClassVar[int] = -1
    STRUCT: ClassVar[type[RequestStruct]]

    def __init__(self, *fields: Any) -> None:
        self._fields = fields

    def build(self, request_struct_class: type[Any]) -> Any:
        return self.STRUCT(*self._fields)

    def prepare(self, versions: dict[int, tuple[int, int]]) -> Any:
        low, high = versions.get(self.API_KEY, (0, -1))
        if not low <= self.STRUCT.API_VERSION <= high:
            raise SecurityAdminError(
                f"the broker does not speak API {self.API_KEY} v{self.STRUCT.API_VERSION} (it offers {low}..{high})"
            )
        return self.build(self.STRUCT)


class _CreateAcls(_Fixed):
    API_KEY = 30
    STRUCT = _CreateAclsStruct


class _DescribeAcls(_Fixed):
    API_KEY = 29
    STRUCT = _DescribeAclsStruct


class _DeleteAcls(_Fixed):
    API_KEY = 31
    STRUCT = _DeleteAclsStruct


class _DescribeScram(_Fixed):
    API_KEY = 50
    STRUCT = _DescribeScramStruct


class _AlterScram(_Fixed):
    API_KEY = 51
    STRUCT = _AlterScramStruct


def _binding(grant: Grant) -> tuple[Any, ...]:
    return (
        RESOURCE_TYPE_CODES[grant.resource_type],
        grant.name,
        PATTERN_CODES[grant.pattern],
        grant.principal,
        ANY_HOST,
        OPERATION_CODES[grant.operation],
        PERMISSION_CODES[grant.permission],
    )


def _check(error_code: int, message: str | None, what: str) -> None:
    if error_code:
        error = for_code(error_code)
        raise SecurityAdminError(f"{what} failed: {error.__name__} ({message or error.description})")


async def create_acls(admin: AIOKafkaAdminClient, grants: Sequence[Grant]) -> None:
    """Create the ACLs; creating one that exists already is a no-op on the broker, so this is idempotent."""
    if not grants:
        return
    creations = [(*_binding(grant), {}) for grant in grants]
    response = await admin._send_request(_CreateAcls(creations, {}))
    for grant, (error_code, message, _tags) in zip(grants, response.results, strict=True):
        _check(error_code, message, f"creating ACL {grant}")


async def describe_acls(admin: AIOKafkaAdminClient, principal: str | None = None) -> list[Grant]:
    """Every ACL (of one principal if given), as grants."""
    request = _DescribeAcls(1, None, 1, principal, None, 1, 1, {})
    response = await admin._send_request(request)
    _check(response.error_code, response.error_message, "describing ACLs")
    grants = []
    for resource_type, name, pattern, acls, _tags in response.resources:
        for acl_principal, _host, operation, permission, _acl_tags in acls:
            grants.append(
                Grant(
                    principal=acl_principal,
                    resource_type=_NAMES["resource_type"][resource_type],
                    name=name,
                    pattern=_NAMES["pattern"][pattern],
                    operation=_NAMES["operation"][operation],
                    permission=_NAMES["permission"][permission],
                )
            )
    return grants


async def delete_acls(admin: AIOKafkaAdminClient, principal: str) -> int:
    """Delete every ACL of the principal; the count of ACLs removed."""
    response = await admin._send_request(_DeleteAcls([(1, None, 1, principal, None, 1, 1, {})], {}))
    removed = 0
    for error_code, message, matching, _tags in response.filter_results:
        _check(error_code, message, f"deleting the ACLs of {principal}")
        removed += len(matching)
    return removed


async def delete_grants(admin: AIOKafkaAdminClient, grants: Sequence[Grant]) -> int:
    """Delete exactly these ACLs (each filter matches one binding); the count of ACLs removed."""
    if not grants:
        return 0
    response = await admin._send_request(_DeleteAcls([(*_binding(grant), {}) for grant in grants], {}))
    removed = 0
    for error_code, message, matching, _tags in response.filter_results:
        _check(error_code, message, "deleting ACLs")
        removed += len(matching)
    return removed


def salted_password(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> bytes:
    """SCRAM's SaltedPassword (RFC 5802 ``Hi``): PBKDF2 with HMAC-SHA-512 for SCRAM-SHA-512."""
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


async def upsert_scram_user(admin: AIOKafkaAdminClient, user: str, password: str) -> None:
    """Create the SCRAM-SHA-512 credential of ``user``, or replace its password; only the salted hash travels."""
    salt = secrets.token_bytes(32)
    upsertion = (user, SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted_password(password, salt), {})
    response = await admin._send_request(_AlterScram([], [upsertion], {}))
    for result_user, error_code, message, _tags in response.results:
        _check(error_code, message, f"setting the SCRAM credential of {result_user}")


async def delete_scram_user(admin: AIOKafkaAdminClient, user: str) -> bool:
    """Remove the SCRAM-SHA-512 credential; False when the user had none."""
    response = await admin._send_request(_AlterScram([(user, SCRAM_SHA_512, {})], [], {}))
    for result_user, error_code, message, _tags in response.results:
        if error_code == _RESOURCE_NOT_FOUND:
            return False
        _check(error_code, message, f"deleting the SCRAM credential of {result_user}")
    return True


async def scram_users(admin: AIOKafkaAdminClient, users: Iterable[str] | None = None) -> list[str]:
    """The users that have a SCRAM credential (all of them, or those of ``users`` that do)."""
    wanted = None if users is None else [(name, {}) for name in users]
    response = await admin._send_request(_DescribeScram(wanted, {}))
    if response.error_code == _RESOURCE_NOT_FOUND:
        return []
    _check(response.error_code, response.error_message, "describing SCRAM users")
    return sorted(user for user, error_code, _message, infos, _tags in response.results if not error_code and infos)


#: RESOURCE_NOT_FOUND: the answer for a user without credentials.
_RESOURCE_NOT_FOUND = 91
