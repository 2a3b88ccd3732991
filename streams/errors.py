"""One root exception for the project.

Each subclass says whether trying again can help (``retriable``), so a stage can decide between retrying and
sending the input to the dead-letter topic without knowing where the error came from.
"""

from __future__ import annotations


class ICS2StreamsError(Exception):
    """Root of every error the project raises on purpose."""

    retriable: bool = False


class InputError(ICS2StreamsError):
    """Input that can never be processed as it is (bad JSON, wrong shape, unknown fields of the wrong type)."""


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


class PlatformError(ICS2StreamsError):
    """The local platform (Java, Maven, the broker process) is not usable."""


class BrokerUnavailable(PlatformError):
    """The broker did not answer in time; trying again later can help."""

    retriable = True
