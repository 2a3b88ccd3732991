"""Every arrow points down: the package's layers, read from the imports of every module under ``streams/``.

A module may import its own package, any package of its own layer (as long as no cycle forms between packages) and
any lower layer; never a higher one. Imports inside functions count too: a lazy import is still an arrow.
``docs/architecture.md`` describes the layers this table encodes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import streams

ROOT = Path(streams.__file__).parent

#: Bottom to top. A top-level package or module of ``streams`` (its "unit") sits in exactly one layer.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "topics", "settings", "logs"}),
    frozenset({"domain", "scenarios"}),
    frozenset({"messages", "contracts"}),
    frozenset({"audit", "simulator", "security", "admin", "client", "inbox", "tables"}),
    frozenset({"pipeline", "gateway", "broker", "deploy"}),
    frozenset({"demo"}),
    frozenset({"cli"}),
)
LAYER_OF: Mapping[str, int] = {unit: level for level, units in enumerate(LAYERS) for unit in units}


@dataclass(frozen=True, slots=True)
class Arrow:
    """One import of another unit of ``streams``: where it is written and what it reaches."""

    path: str
    line: int
    source: str
    target: str
    imported: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.imported}"


def unit_of(module: str) -> str:
    """``streams.domain.ledger`` -> ``domain``; ``streams.demo`` -> ``demo``."""
    return module.split(".")[1] if module.count(".") else ""


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every module of ``streams`` the tree imports, anywhere in it, relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            if name == "streams":
                for alias in node.names:
                    yield node.lineno, f"streams.{alias.name}"
            else:
                yield node.lineno, name


def arrows(sources: Mapping[str, tuple[str, str, bool]]) -> list[Arrow]:
    """The imports between units, from ``{module: (path, source, is_package)}``."""
    found = []
    for module, (path, text, is_package) in sorted(sources.items()):
        for line, imported in imported_modules(ast.parse(text, path), module, is_package):
            if imported != "streams" and not imported.startswith("streams."):
                continue
            source, target = unit_of(module), unit_of(imported)
            if source and target and source != target:
                found.append(Arrow(path, line, source, target, imported))
    return found


def upward(found: list[Arrow]) -> list[str]:
    """The arrows that reach a higher layer, or a unit no layer holds."""
    problems = []
    for arrow in found:
        for unit in (arrow.source, arrow.target):
            if unit not in LAYER_OF:
                problems.append(f"{arrow}: {unit!r} is in no layer of tests/unit/test_layers.py")
        if arrow.source in LAYER_OF and arrow.target in LAYER_OF and LAYER_OF[arrow.target] > LAYER_OF[arrow.source]:
            problems.append(f"{arrow}: layer {LAYER_OF[arrow.source]} reaches up to layer {LAYER_OF[arrow.target]}")
    return problems


def cycles(found: list[Arrow]) -> list[str]:
    """Each import cycle between units, named by one arrow of each of its steps."""
    first: dict[tuple[str, str], Arrow] = {}
    for arrow in found:
        first.setdefault((arrow.source, arrow.target), arrow)
    graph: dict[str, set[str]] = {}
    for source, target in first:
        graph.setdefault(source, set()).add(target)
    problems, seen = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    ring = frozenset(trail)
                    if ring not in seen:
                        seen.add(ring)
                        steps = zip(trail, [*trail[1:], start], strict=True)
                        problems.append("cycle: " + "; ".join(str(first[step]) for step in steps))
                elif nxt not in trail and nxt > start:
                    stack.append((nxt, [*trail, nxt]))
    return problems


def check(sources: Mapping[str, tuple[str, str, bool]]) -> list[str]:
    found = arrows(sources)
    return upward(found) + cycles(found)


def package_sources() -> dict[str, tuple[str, str, bool]]:
    sources = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        is_package = path.name == "__init__.py"
        module = ".".join(parts[:-1] if is_package else parts)
        sources[module] = (str(path.relative_to(ROOT.parent)), path.read_text(encoding="utf-8"), is_package)
    return sources


def test_every_import_of_the_package_points_down() -> None:
    sources = package_sources()
    assert len(sources) > 50
    assert check(sources) == []


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {unit_of(m) for m in package_sources()} - {""}
    assert units - set(LAYER_OF) == set()


def _fake(module: str, text: str, is_package: bool = False) -> dict[str, tuple[str, str, bool]]:
    path = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    return {module: (path, text, is_package)}


@pytest.mark.parametrize(
    ("module", "text", "arrow"),
    [
        (
            "streams.domain.ledger",
            "from streams.messages.notifications import Notification\n",
            "streams/domain/ledger.py:1: domain imports streams.messages.notifications",
        ),
        (
            "streams.domain.outbound",
            "def render(d):\n    from streams.messages.render import render_filing\n    return render_filing(d)\n",
            "streams/domain/outbound.py:2: domain imports streams.messages.render",
        ),
        (
            "streams.audit.replay",
            "from streams.pipeline.acks import ACK\n",
            "streams/audit/replay.py:1: audit imports streams.pipeline.acks",
        ),
        (
            "streams.audit.entries",
            "import streams.pipeline.records\n",
            "streams/audit/entries.py:1: audit imports streams.pipeline.records",
        ),
        (
            "streams.demo",
            "\nfrom streams.cli.replay import read_trail\n",
            "streams/demo.py:2: demo imports streams.cli.replay",
        ),
        (
            "streams.domain.routing",
            "from ..messages import notifications\n",
            "streams/domain/routing.py:1: domain imports streams.messages",
        ),
        (
            "streams.domain",
            "from streams import pipeline\n",
            "streams/domain/__init__.py:1: domain imports streams.pipeline",
        ),
    ],
)
def test_an_upward_import_fails_naming_its_file_and_line(module: str, text: str, arrow: str) -> None:
    problems = check(_fake(module, text, is_package=module == "streams.domain"))
    assert len(problems) == 1
    assert problems[0].startswith(arrow + ": layer ")


def test_a_downward_import_passes() -> None:
    sources = _fake("streams.pipeline.stage", "from streams.domain.model import Consolidation\nimport json\n")
    assert check(sources) == []


def test_a_cycle_within_a_layer_fails() -> None:
    sources = {
        **_fake("streams.pipeline.consult", "from streams.gateway.files import read\n"),
        **_fake("streams.gateway.files", "def read():\n    import streams.pipeline.records\n"),
    }
    (problem,) = check(sources)
    assert problem == (
        "cycle: streams/gateway/files.py:2: gateway imports streams.pipeline.records; "
        "streams/pipeline/consult.py:1: pipeline imports streams.gateway.files"
    )


def test_the_messages_domain_circle_fails_once_as_upward() -> None:
    sources = {
        **_fake("streams.domain.outbound", "from streams.messages.render import render_filing\n"),
        **_fake("streams.messages.render", "from streams.domain.planning import FilingDraft\n"),
    }
    problems = check(sources)
    assert [p.split(": ", 1)[0] for p in problems] == ["streams/domain/outbound.py:1", "cycle"]


def test_a_module_in_no_layer_fails() -> None:
    (problem,) = check(_fake("streams.newthing", "from streams.domain.model import Consolidation\n"))
    assert problem.endswith("'newthing' is in no layer of tests/unit/test_layers.py")
