"""One root exception for the project, and the exit code of each kind of failure.

Each subclass says whether trying again can help (``retriable``), so a stage can decide between retrying and
sending the input to the dead-letter topic without knowing where the error came from. The command line turns any
of them into one line on standard error (the message and ``hint``: what to do) and the class's ``exit_code``;
``ExitCode`` is the one table of exit codes, documented in the README.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


class ExitCode(IntEnum):
    """What ``ics2`` exits with; scripts branch on these, so a value never changes meaning."""

    OK = 0
    FINDINGS = 1
    USAGE = 2
    INPUT = 3
    BROKER = 4
    WORKER = 5
    PORT = 6
    NOT_FOUND = 7
    FAILED = 8
    INTERRUPTED = 130


#: Each exit code in words, as the README's table shows it (a unit test keeps the two alike).
EXIT_CODE_MEANINGS: Mapping[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.FINDINGS: "the command ran and found problems: plan or validation errors, a filing that did not "
    "render, a broken audit trail, deployment files that differ",
    ExitCode.USAGE: "bad options or arguments, or an ICS2_* setting with an unusable value",
    ExitCode.INPUT: "an input file is missing, unreadable or not what the command needs (not JSON, not a booking, "
    "hostile XML)",
    ExitCode.BROKER: "no Kafka broker answers at the bootstrap servers",
    ExitCode.WORKER: "no worker answers at its web address (ics2 status)",
    ExitCode.PORT: "a port the command must listen on is taken by another process",
    ExitCode.NOT_FOUND: "what was asked for does not exist: an MBL no worker holds, a party without a queue, an "
    "unknown alert id, a missing topic",
    ExitCode.FAILED: "anything else that failed: the platform (Java, Maven), the broker refusing a change, a demo "
    "step that did not happen in time",
    ExitCode.INTERRUPTED: "stopped with Ctrl-C",
}


class ICS2StreamsError(Exception):
    """Root of every error the project raises on purpose."""

    retriable: bool = False
    exit_code: ExitCode = ExitCode.FAILED
    hint: str = ""
    """What the user can do about it, shown after the message."""

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        if hint is not None:
            self.hint = hint


class InputError(ICS2StreamsError):
    """Input that can never be processed as it is (bad JSON, wrong shape, unknown fields of the wrong type)."""

    exit_code = ExitCode.INPUT


class BookingError(InputError):
    """A booking event that cannot be turned into a consolidation."""


class DecodeError(InputError):
    """Bytes that cannot be decoded: corrupt Avro, unknown schema fingerprint, malformed XML."""


class UnknownSchemaError(DecodeError):
    """An Avro single-object message whose writer schema's fingerprint is not in the catalogue."""


class XMLRejected(DecodeError):
    """XML refused before or while parsing: DTDs, entities, oversize, wrong namespace, unknown message."""


class RenderError(ICS2StreamsError):
    """A filing could not be rendered as ICS2 XML (the draft is missing data the message needs)."""


class NotFound(ICS2StreamsError):
    """What the user asked for does not exist where the command looked."""

    exit_code = ExitCode.NOT_FOUND


class WorkerUnavailable(ICS2StreamsError):
    """No worker answers at the web address given."""

    exit_code = ExitCode.WORKER
    hint = "start one with `ics2 worker`, or give its address with --worker (ICS2_WEB_HOST, ICS2_WEB_PORT)"


class PlatformError(ICS2StreamsError):
    """The local platform (Java, Maven, the broker process) is not usable."""


class PortInUse(PlatformError):
    """A port the command must listen on is taken by another process."""

    exit_code = ExitCode.PORT


class BrokerUnavailable(PlatformError):
    """The broker did not answer in time; trying again later can help."""

    retriable = True
    exit_code = ExitCode.BROKER
    hint = "start one with `ics2 broker start`, or point --bootstrap-servers (ICS2_BOOTSTRAP_SERVERS) at a running one"
