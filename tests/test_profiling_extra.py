"""desim profile without the ``profile`` extra: a clear install hint (no torch needed)."""

from __future__ import annotations

import sys

import pytest

from desim.cli.main import main
from desim.profiling import ProfilingUnavailableError, require_profiling


def test_missing_torch_gives_install_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ProfilingUnavailableError, match=r'pip install "\.\[profile\]"'):
        require_profiling()
    code = main(["profile", "--model", "roberta-base", "--batch", "1", "--seq-len", "8",
                 "--out", "x.csv"])
    assert code == 2
    assert "torch==2.13.0+cpu" in capsys.readouterr().err


# ---- Kill-and-Revive score files (no torch needed) -------------------------------------------

KR_HEADER = "step,module,layer,target,score\n"


def _kr(tmp_path, body, header=KR_HEADER):
    path = tmp_path / "kr.csv"
    path.write_text(header + body)
    return path


def test_read_kr_scores_orders_steps_and_modules(tmp_path):
    from desim.io.calibration import read_kr_scores

    body = ("2,1,1,value,0.5\n2,0,1,query,1.5\n1,0,1,query,1.25\n1,1,1,value,0.75\n")
    scores = read_kr_scores(_kr(tmp_path, body))
    assert scores.shape == (2, 2)
    assert scores.tolist() == [[1.25, 0.75], [1.5, 0.5]]


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        ("step,layer,score\n", "1,1,1.0\n", r"missing columns: module"),
        (KR_HEADER, "1,0,1,query,-1\n", r"line 2: field score: expected a finite non-negative"),
        (KR_HEADER, "1,0,1,query,1\n1,1,1,value,nan\n", r"line 3: field score"),
        (KR_HEADER, "1,0,1,query,inf\n", r"line 2: field score"),
        (KR_HEADER, "1,0.5,1,query,1\n", r"line 2: field module: expected a non-negative integer"),
        (KR_HEADER, "1,0,1,query,1\n1,2,2,query,1\n", r"step 1: module 1 missing"),
        (KR_HEADER, "1,0,1,query,1\n1,1,1,value,1\n2,1,1,value,1\n", r"step 2: module 0 missing"),
        (KR_HEADER, "1,0,1,query,1\n1,0,1,query,1\n", r"line 3: duplicate row for step 1"),
        (KR_HEADER, "", r"no score rows"),
    ],
)
def test_read_kr_scores_errors_name_file_line_and_field(tmp_path, header, body, message):
    from desim.errors import InputError
    from desim.io.calibration import read_kr_scores

    path = _kr(tmp_path, body, header)
    with pytest.raises(InputError, match=message) as info:
        read_kr_scores(path)
    assert str(path) in str(info.value)


def test_shipped_kr_scores_have_one_value_per_module_of_roberta_base():
    import numpy as np

    from desim.errors import InputError
    from desim.io.calibration import read_kr_scores, resolve_kr_scores_path
    from desim.io.shipped import shipped_kr_scores

    assert "kr-scores_roberta-base.csv" in shipped_kr_scores()  # packaged (pyproject)
    scores = read_kr_scores(resolve_kr_scores_path("shipped:kr-scores_roberta-base.csv"))
    assert scores.shape == (20, 24)
    assert np.allclose(scores.mean(axis=1), 1.0)
    with pytest.raises(InputError, match="no such shipped score file.*kr-scores_roberta-base"):
        resolve_kr_scores_path("shipped:nope.csv")


def test_profile_tables_from_before_flops_still_load(tmp_path):
    from desim.io.calibration import PROFILE_COLUMNS, read_profile

    header = [c for c in PROFILE_COLUMNS if c not in ("flops", "target_len")]
    values = {c: "1" for c in header}
    values.update(hardware="h", model="m", method="lora", clock="wall", memory_method="x",
                  device="cpu", device_name="cpu", torch_version="2", transformers_version="5",
                  peft_version="0", date="d")
    path = tmp_path / "old.csv"
    path.write_text(",".join(header) + "\n" + ",".join(values[c] for c in header) + "\n")
    table = read_profile(path)
    assert list(table.columns) == list(PROFILE_COLUMNS)
    assert table["flops"].isna().all() and table["target_len"].tolist() == [0]
    bad = tmp_path / "bad.csv"
    text = path.read_text().splitlines()
    bad.write_text(text[0] + ",flops\n" + text[1] + ",-3\n")
    from desim.errors import InputError

    with pytest.raises(InputError, match="line 2: column flops"):
        read_profile(bad)
