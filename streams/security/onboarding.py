"""Onboard and offboard parties, and give the product's own processes their principals, on a secured broker.

Every call is declarative and safe to repeat: the queue topic is applied through ``streams.admin``, a SCRAM
credential is created only when missing (or when a password is given, which rotates it), and the ACLs are made
equal to ``streams.security.acls``' grants: missing ones are created, stale ones of the same principal on this
deployment's resources are removed. The caller must authenticate as the admin (a super user).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog
from aiokafka.admin import AIOKafkaAdminClient

from streams.admin import admin_client, apply_topics, delete_topics, list_topics
from streams.security import kafka_admin
from streams.security.acls import (
    PARTY_GROUP_SEPARATOR,
    PARTY_USER_PREFIX,
    Grant,
    gateway_grants,
    party_grants,
    party_group,
    party_queue_prefix,
    party_user,
    principal_of,
    worker_grants,
)
from streams.settings import ProcessingGuarantee, Settings
from streams.topics import Catalogue

log = structlog.get_logger(__name__)

PROCESS_ROLES = ("worker", "gateway")
VISIBLE_TIMEOUT_S = 30.0
VISIBLE_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Access:
    """What an onboarding did for one principal; ``password`` is set only when this call created or changed it."""

    user: str
    grants: tuple[Grant, ...]
    created_user: bool
    acls_added: int
    acls_removed: int
    queue: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Offboarding:
    """What an offboarding removed; the user stays while it holds grants on another deployment's prefix."""

    acls_removed: int
    user_deleted: bool
    queue_deleted: bool


@dataclass(frozen=True, slots=True)
class PartyListing:
    """One party as the cluster knows it, on this deployment's prefix."""

    party_id: str
    user: str
    has_credential: bool
    queue_exists: bool
    acls: int


def new_password() -> str:
    """A random password of 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def read_or_create_password(path: Path) -> tuple[str, bool]:
    """The password in ``path``, or a new one written there with mode 0600; True when it was created."""
    if path.exists():
        password = path.read_text(encoding="utf-8").strip()
        if not password:
            raise ValueError(f"password file {path} is empty")
        return password, False
    password = new_password()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    return password, True


async def onboard_party(settings: Settings, catalogue: Catalogue, party_id: str, password: str | None = None) -> Access:
    """Create the party's queue, its SCRAM user (if missing, or with the given password) and exactly its grants."""
    grants = party_grants(catalogue, party_id)
    queue = catalogue.party_queue(party_id).name
    await apply_topics(settings, catalogue, [party_id])
    async with admin_client(settings) as admin:
        access = await _grant(admin, party_user(party_id), password, grants, _PartyScope(catalogue, party_id))
    log.info("party_onboarded", party=party_id, queue=queue, added=access.acls_added, removed=access.acls_removed)
    return replace(access, queue=queue)


async def offboard_party(
    settings: Settings, catalogue: Catalogue, party_id: str, *, delete_queue: bool = False
) -> Offboarding:
    """Remove the party's grants on this deployment, and its credential unless it holds grants on another prefix.

    The queue is kept by default because its records may still be evidence (what the party was told, when).
    """
    user = party_user(party_id)
    async with admin_client(settings) as admin:
        current = await kafka_admin.describe_acls(admin, principal_of(user))
        scope = _PartyScope(catalogue, party_id)
        removed = await kafka_admin.delete_grants(admin, [grant for grant in current if scope(grant)])
        elsewhere = [grant for grant in current if not scope(grant)]
        if not elsewhere:
            await kafka_admin.delete_scram_user(admin, user)
        await _await_visible(admin, user, bool(elsewhere), set(), scope)
    if delete_queue:
        await delete_topics(settings, [catalogue.party_queue(party_id).name])
    log.info("party_offboarded", party=party_id, acls_removed=removed, queue_deleted=delete_queue)
    return Offboarding(acls_removed=removed, user_deleted=not elsewhere, queue_deleted=delete_queue)


async def list_parties(settings: Settings, catalogue: Catalogue) -> list[PartyListing]:
    """Parties that have a credential or a queue on this deployment, with how many ACLs they hold here."""
    queue_prefix = party_queue_prefix(catalogue)
    queues = {
        name.removeprefix(queue_prefix).removesuffix(".queue")
        for name in await list_topics(settings, queue_prefix)
        if name.endswith(".queue")
    }
    async with admin_client(settings) as admin:
        users = await kafka_admin.scram_users(admin)
        acls = await kafka_admin.describe_acls(admin)
    with_credential = {user.removeprefix(PARTY_USER_PREFIX) for user in users if user.startswith(PARTY_USER_PREFIX)}
    listings = []
    for party_id in sorted(queues | with_credential):
        scope = _PartyScope(catalogue, party_id)
        principal = principal_of(party_user(party_id))
        listings.append(
            PartyListing(
                party_id=party_id,
                user=party_user(party_id),
                has_credential=party_id in with_credential,
                queue_exists=party_id in queues,
                acls=sum(1 for grant in acls if grant.principal == principal and scope(grant)),
            )
        )
    return listings


def process_grants(settings: Settings, catalogue: Catalogue, role: str, user: str) -> list[Grant]:
    """The grants of one of the product's processes, for the settings' app id and processing guarantee."""
    if role == "worker":
        exactly_once = settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
        return worker_grants(catalogue, settings.app_id, user, exactly_once=exactly_once)
    if role == "gateway":
        return gateway_grants(catalogue, settings.app_id, user)
    raise ValueError(f"process role {role!r} is not one of {', '.join(PROCESS_ROLES)}")


async def onboard_process(
    settings: Settings, catalogue: Catalogue, role: str, user: str, password: str | None = None
) -> Access:
    """Give ``ics2 worker`` or ``ics2 gateway`` its own principal with exactly its grants (and nothing of others)."""
    grants = process_grants(settings, catalogue, role, user)
    principal = principal_of(user)

    def in_deployment(grant: Grant) -> bool:
        """The user's ACLs on this deployment's resources; those of another prefix or app id are left alone."""
        names = (catalogue.prefix, settings.app_id)
        return grant.principal == principal and (
            grant.resource_type == "cluster" or any(grant.name.startswith(name) for name in names)
        )

    async with admin_client(settings) as admin:
        access = await _grant(admin, user, password, grants, in_deployment)
    log.info("process_onboarded", role=role, user=user, added=access.acls_added, removed=access.acls_removed)
    return access


async def _grant(
    admin: AIOKafkaAdminClient,
    user: str,
    password: str | None,
    grants: list[Grant],
    in_scope: Callable[[Grant], bool],
) -> Access:
    """Credential first (only if missing or a password is given), then make the principal's ACLs equal the grants."""
    exists = user in await kafka_admin.scram_users(admin, [user])
    if password is None and not exists:
        password = new_password()
    if password is not None:
        await kafka_admin.upsert_scram_user(admin, user, password)
    current = [grant for grant in await kafka_admin.describe_acls(admin, principal_of(user)) if in_scope(grant)]
    wanted = set(grants)
    missing = [grant for grant in grants if grant not in set(current)]
    stale = [grant for grant in current if grant not in wanted]
    await kafka_admin.create_acls(admin, missing)
    removed = await kafka_admin.delete_grants(admin, stale)
    await _await_visible(admin, user, True, set(grants), in_scope)
    return Access(
        user=user,
        grants=tuple(grants),
        created_user=not exists,
        acls_added=len(missing),
        acls_removed=removed,
        password=password,
    )


async def _await_visible(
    admin: AIOKafkaAdminClient,
    user: str,
    has_credential: bool,
    grants: set[Grant],
    in_scope: Callable[[Grant], bool],
    timeout: float = VISIBLE_TIMEOUT_S,
) -> None:
    """Wait until the broker answers with what the controller committed: the credential there or not, the grants.

    Changes are committed by the controller and served by the broker from its copy of the metadata, which lags
    while it is busy (creating the logs of many new topics, for instance); without this wait, a command right
    after an onboarding could see no user, and rotate a password it should have kept.
    """
    deadline = time.monotonic() + timeout
    while True:
        has_user = user in await kafka_admin.scram_users(admin, [user])
        current = {grant for grant in await kafka_admin.describe_acls(admin, principal_of(user)) if in_scope(grant)}
        if has_user == has_credential and current == grants:
            return
        if time.monotonic() > deadline:
            raise kafka_admin.SecurityAdminError(
                f"the broker did not show the changes for {user} within {timeout:.0f}s; run the command again"
            )
        await asyncio.sleep(VISIBLE_POLL_S)


class _PartyScope:
    """Which of a principal's ACLs belong to one party on one deployment (so other prefixes keep theirs)."""

    def __init__(self, catalogue: Catalogue, party_id: str) -> None:
        self.queue = catalogue.party_queue(party_id).name
        self.group = party_group(catalogue, party_id)
        self.principal = principal_of(party_user(party_id))

    def __call__(self, grant: Grant) -> bool:
        if grant.principal != self.principal:
            return False
        if grant.resource_type == "group":
            return grant.name in (self.group, f"{self.group}{PARTY_GROUP_SEPARATOR}")
        return grant.resource_type == "topic" and grant.name == self.queue
