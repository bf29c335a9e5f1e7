"""The calibration page's figures are the committed measurements' (experiments/calibration)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from desim.io.hosts import read_class_file

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "experiments" / "calibration" / "measured"
PAGE = (ROOT / "docs" / "calibration.md").read_text()


def _summarise():
    spec = importlib.util.spec_from_file_location(
        "summarise", ROOT / "experiments" / "calibration" / "summarise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_shipped_table_was_re_measured_and_the_page_shows_it():
    s = _summarise()
    table = s.summarise(MEASURED / "2026-12-02")
    shipped = {p.stem.removeprefix("cpu-reference_")
               for p in (ROOT / "desim" / "data" / "profiles").glob("*.csv")}
    assert {f"{m}_{k}" for m, k in zip(table["model"], table["method"])} == shipped
    overall = table[table["point"] == "all"]
    assert (overall["shape_mape_pct"] < overall["absolute_mape_pct"]).all()
    assert s.markdown(table) in PAGE
    drift = s.summarise(MEASURED / "drift")
    assert drift["file"].nunique() >= 3
    assert s.markdown(drift, by_file=True) in PAGE


def test_the_calibrated_class_meets_the_target_on_held_out_points():
    folder = MEASURED / "calibrated"
    cls = read_class_file(folder / "cpu-reference-calibrated.toml")
    assert cls.profile == "cpu-reference" and cls.host["cpu_id"]
    report = pd.read_csv(folder / "cpu-reference-calibrated-validation.csv")
    overall = report[report["batch_size"] == 0].iloc[0]
    assert overall["latency_mape_pct"] <= 5.0
    assert f"{cls.speed:.4f}x the profile" in PAGE
