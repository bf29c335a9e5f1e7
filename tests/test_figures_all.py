"""Every figure from one command in a copy of the repository with nothing beside it (slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desim.experiments.paper_figures.base import figure_names

ROOT = Path(__file__).resolve().parents[1]


def _repository_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone of this tree holds."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


@pytest.mark.slow
def test_figures_all_from_a_bare_copy(tmp_path: Path) -> None:
    copy = tmp_path / "desim"  # no ../shared beside it
    for rel in _repository_files():
        dest = copy / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    assert not (copy.parent / "shared").exists()
    env = {**os.environ, "PYTHONPATH": str(copy)}  # the copy's desim, not this checkout's
    proc = subprocess.run(
        [sys.executable, "-m", "desim.cli", "figures", "--all", "--workers", "2"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in figure_names():
        for ext in ("png", "pdf", "csv"):
            path = copy / "figures" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
