"""Stopping the connector's aiokafka clients while the broker may be away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog
from aiokafka.errors import KafkaError

log = structlog.get_logger(__name__)

#: How long a stop waits for one client (or the gateway) to close.
CLOSE_WAIT_S = 5.0


async def stop_quietly(stopping: Awaitable[None], name: str, timeout: float | None = None) -> None:
    """Wait at most ``timeout`` seconds (``CLOSE_WAIT_S``) for a client's ``stop()``; a stop that fails or takes
    longer is logged.

    Why: with the broker away a consumer's stop waits to leave its group and a producer's for the records it holds,
    and aiokafka 0.14's consumer lets the ``CancelledError`` of a fetch it cancels out of ``stop()`` (its fetcher
    awaits the task it cancelled while that task was sleeping after a failed fetch): the caller would end as if it
    had been cancelled itself, and the connector exited on it in an outage.
    """
    timeout = CLOSE_WAIT_S if timeout is None else timeout
    try:
        await asyncio.wait_for(stopping, timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("client_stop_incomplete", client=name, error="CancelledError from inside aiokafka")
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("client_stop_incomplete", client=name, error=repr(exc), waited_s=timeout)
