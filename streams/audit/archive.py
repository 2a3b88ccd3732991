"""The audit trail's archive: Avro object container files, for retention beyond the Kafka cluster's.

Each ``ics2 archive`` run writes ``audit-<run>.avro`` (deflate, the ``AuditRecord`` schema) with the records read
since the run before, and ``audit-<run>.manifest.json``: the offsets it covers per partition, the SHA-256 of the file
and the head of every chain after it, so that a replay from the archive also sees a chain cut short. Each head keeps
the signature of the record it names (the audit stage's Ed25519 signature), so a head rewritten to match a cut or
forged file does not verify.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import reader as avro_reader
from fastavro import writer as avro_writer

from streams.audit.trail import ChainHead, head_after
from streams.contracts.avro import SchemaCatalogue
from streams.errors import DecodeError, ICS2StreamsError


class ArchiveError(ICS2StreamsError):
    """An archive folder or file that cannot be read or written."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one archive file holds: which offsets of which topic, its hash, and the chain heads after it."""

    run: int
    file: str
    file_sha256: str
    topic: str
    records: int
    offsets: dict[int, tuple[int, int]]
    """partition -> (first offset, next offset): the half-open range of offsets the file covers."""
    heads: dict[str, ChainHead]

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "file": self.file,
            "file_sha256": self.file_sha256,
            "topic": self.topic,
            "records": self.records,
            "offsets": {str(p): {"from": a, "next": b} for p, (a, b) in sorted(self.offsets.items())},
            "heads": {
                mbl: {
                    "next_sequence": h.next_sequence,
                    "last_hash": h.last_hash,
                    "key_id": h.key_id,
                    "signature": h.signature,
                }
                for mbl, h in sorted(self.heads.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(
            run=int(data["run"]),
            file=str(data["file"]),
            file_sha256=str(data["file_sha256"]),
            topic=str(data["topic"]),
            records=int(data["records"]),
            offsets={int(p): (int(r["from"]), int(r["next"])) for p, r in data["offsets"].items()},
            heads={
                mbl: ChainHead(mbl, int(h["next_sequence"]), h.get("last_hash"), h.get("key_id"), h.get("signature"))
                for mbl, h in data["heads"].items()
            },
        )


@dataclass
class ArchiveContent:
    """Records read from archive files in their stored order, the latest chain heads, and what did not check out."""

    records: list[dict[str, Any]] = field(default_factory=list)
    heads: dict[str, ChainHead] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifests(directory: Path) -> list[Manifest]:
    """The manifests of an archive folder, oldest run first."""
    found = []
    for path in sorted(directory.glob("audit-*.manifest.json")):
        try:
            found.append(Manifest.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"{path}: not a readable archive manifest: {exc}") from exc
    return sorted(found, key=lambda m: m.run)


def next_offsets(directory: Path, topic: str) -> dict[int, int]:
    """Where the next run starts reading, per partition: after what earlier runs archived of ``topic``."""
    offsets: dict[int, int] = {}
    for manifest in manifests(directory):
        if manifest.topic == topic:
            for partition, (_, end) in manifest.offsets.items():
                offsets[partition] = max(offsets.get(partition, 0), end)
    return offsets


def write_archive(
    directory: Path,
    topic: str,
    records: Sequence[Mapping[str, Any]],
    offsets: Mapping[int, tuple[int, int]],
    schemas: SchemaCatalogue,
) -> Manifest:
    """Write one run's file and manifest; the chain heads carry on from the previous run's (a record stored twice
    after a crash never moves a head back)."""
    directory.mkdir(parents=True, exist_ok=True)
    earlier = manifests(directory)
    run = (earlier[-1].run + 1) if earlier else 1
    heads = dict(earlier[-1].heads) if earlier else {}
    for record in records:
        after = head_after(record)
        if after.next_sequence > heads.get(after.mbl, ChainHead(after.mbl)).next_sequence:
            heads[after.mbl] = after
    path = directory / f"audit-{run:06d}.avro"
    metadata = {"ics2.topic": topic, "ics2.run": str(run)}
    try:
        with path.open("wb") as out:
            avro_writer(out, schemas.schema("AuditRecord"), list(records), codec="deflate", metadata=metadata)
    except (OSError, ValueError, TypeError) as exc:
        raise ArchiveError(f"{path}: cannot write the archive: {exc}") from exc
    manifest = Manifest(run, path.name, _sha256_file(path), topic, len(records), dict(offsets), heads)
    manifest_path = directory / f"audit-{run:06d}.manifest.json"
    manifest_path.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _read_file(path: Path, data: bytes | None = None) -> list[dict[str, Any]]:
    """The records of one container file (fastavro gives each as a new dict: no copy is needed)."""
    try:
        stream = io.BytesIO(data) if data is not None else path.open("rb")
        with stream:
            return list(avro_reader(stream))  # type: ignore[arg-type]
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise DecodeError(f"{path}: not a readable Avro container file: {exc}") from exc


def _read_checked(file: Path) -> tuple[list[dict[str, Any]], str]:
    """The records of an archive file and the SHA-256 of its bytes, read once; the hash is computed in a thread
    while the records are decoded (hashlib lets go of the GIL), so it costs no time on a second core."""
    data = file.read_bytes()
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(lambda: hashlib.sha256(data).hexdigest())
        records = _read_file(file, data)
        return records, digest.result()


def read_archives(paths: Iterable[Path]) -> ArchiveContent:
    """Records of archive folders (every run, in order, checked against its manifest) and of single files."""
    content = ArchiveContent()
    for path in paths:
        if path.is_dir():
            for manifest in manifests(path):
                file = path / manifest.file
                if not file.exists():
                    content.problems.append(f"{file}: listed in its manifest but missing")
                    continue
                records, digest = _read_checked(file)
                if digest != manifest.file_sha256:
                    content.problems.append(f"{file}: its SHA-256 differs from the manifest's")
                if len(records) != manifest.records:
                    content.problems.append(f"{file}: {len(records)} records, the manifest says {manifest.records}")
                content.records.extend(records)
                content.heads.update(manifest.heads)
        elif path.is_file() and path.suffix == ".avro":
            content.records.extend(_read_file(path))
        else:
            raise ArchiveError(f"{path}: neither an archive folder nor an .avro file")
    return content
