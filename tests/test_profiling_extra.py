"""desim profile without the ``profile`` extra: a clear install hint (no torch needed)."""

from __future__ import annotations

import sys

import pytest

from desim.cli import main
from desim.profiling import ProfilingUnavailableError, require_profiling


def test_missing_torch_gives_install_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ProfilingUnavailableError, match=r'pip install "\.\[profile\]"'):
        require_profiling()
    code = main(["profile", "--model", "roberta-base", "--batch", "1", "--seq-len", "8",
                 "--out", "x.csv"])
    assert code == 2
    assert "torch==2.13.0+cpu" in capsys.readouterr().err
