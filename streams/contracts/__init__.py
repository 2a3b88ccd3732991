"""The product's data contracts: Avro schemas and their single-object codec, schema evolution, dead letters."""

from streams.contracts.avro import (
    MARKER,
    MAX_MESSAGE_BYTES,
    Decoded,
    SchemaCatalogue,
    SchemaDefinitionError,
    SchemaNotFound,
    SchemaViolation,
    single_object_fingerprint,
)
from streams.contracts.compat import Incompatibility, IncompatibilityKind, can_read, full_compatibility
from streams.contracts.dead_letter import DeadLetter, DeadLetterEnvelope, DeadLetterError, dead_letter, error_headers

__all__ = [
    "MARKER",
    "MAX_MESSAGE_BYTES",
    "DeadLetter",
    "DeadLetterEnvelope",
    "DeadLetterError",
    "Decoded",
    "Incompatibility",
    "IncompatibilityKind",
    "SchemaCatalogue",
    "SchemaDefinitionError",
    "SchemaNotFound",
    "SchemaViolation",
    "can_read",
    "dead_letter",
    "error_headers",
    "full_compatibility",
    "single_object_fingerprint",
]
