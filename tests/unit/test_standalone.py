"""The repository stands alone: a clone with nothing beside it collects and reads only its own files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.data import OFFICIAL_XSD, REPO, SEED_PATH, SEED_PLAN_PATH

#: Ways a file could reach the workplace folder beside a clone.
OUTSIDE = re.compile(r"""\.\./shared|parents\[\d\]\s*/\s*["']shared|\.parent\s*/\s*["']shared|SHARED\s*=""")


#: The files that name the folder in order to watch for it.
WATCHERS = {"conftest.py", Path(__file__).name}


def tracked_files() -> list[Path]:
    """The files a clone has: git's list when this is a checkout, else everything but caches."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", ".cache", ".state", ".git", "__pycache__"}
        return [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


class TestStandsAlone:
    def test_reference_data_is_in_the_repository(self):
        """The seed, its plan and the official type library ship inside the clone."""
        for path in (SEED_PATH, SEED_PLAN_PATH, OFFICIAL_XSD / "ctypes.xsd", OFFICIAL_XSD / "IE3N99.xsd"):
            assert path.is_file() and REPO in path.parents

    def test_no_source_names_a_path_beside_the_clone(self):
        """No module, test, benchmark or build file reaches for ``../shared``."""
        offenders = [
            f"{path.relative_to(REPO)}:{n}"
            for path in tracked_files()
            if path.suffix in {".py", ".toml", ".cfg", ".sh"} or path.name in {"Makefile", "run"}
            if path.name not in WATCHERS
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if OUTSIDE.search(line)
        ]
        assert offenders == []

    def test_a_clone_with_nothing_beside_it_collects_every_test(self, tmp_path):
        """A copy of the tracked files in an empty folder collects the whole suite without an error."""
        clone = tmp_path / "lonely" / "ics2-streams"
        for path in tracked_files():
            target = clone / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        assert not (clone.parent / "shared").exists()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert " error" not in result.stdout.splitlines()[-1]
