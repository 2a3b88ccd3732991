"""One exception root: every exception class of a module under ``streams/`` derives from ``ICS2StreamsError``.

The stages, the CLI and the gateway catch the root to tell a known failure (dead letter, exit code, hint) from a
bug; a class outside it would be reported as an unexpected error.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import streams
from streams.errors import ICS2StreamsError
from streams.pipeline.stage import StageFailure


def project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    root = Path(streams.__file__).parent
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if path.name == "__init__.py" else parts))
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_exception_of_the_package_derives_from_the_root() -> None:
    found = project_exceptions()
    assert "streams.pipeline.stage.StageFailure" in found
    assert [name for name, cls in found.items() if not issubclass(cls, ICS2StreamsError)] == []


def test_a_stage_failure_is_a_project_error_that_no_retry_helps() -> None:
    failure = StageFailure("decode", "not a booking", party="FWD1")
    assert isinstance(failure, ICS2StreamsError)
    assert not failure.retriable
    assert str(failure) == "not a booking"
