"""Fuzz the trace and profile loaders: a file either loads or gives one InputError naming it."""

import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desim.errors import InputError
from desim.io.calibration import PROFILE_COLUMNS, read_profile
from desim.io.traces import read_trace

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.sampled_from(["", "nan", "inf", "-inf", "x", "1e999", "-0", "true", "dev0"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6),
)


def csv_text(columns, rows):
    def fmt(v):
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        return str(v).replace(",", ";").replace("\n", " ").replace("\r", " ").replace('"', "'")

    lines = [",".join(columns)] + [",".join(fmt(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


TRACE_COLUMNS = [
    "device",
    "time_s",
    "gain_db",
    "snr_db",
    "throughput_mbps",
    "ref_bandwidth_hz",
    "speed_factor",
    "available",
    "bogus",
]


@SETTINGS
@given(
    columns=st.lists(st.sampled_from(TRACE_COLUMNS), min_size=0, max_size=5, unique=True),
    rows=st.lists(st.lists(cell, min_size=5, max_size=5), max_size=6),
)
def test_trace_loader_never_crashes(tmp_path, columns, rows):
    path = tmp_path / "fuzz.csv"
    path.write_text(csv_text(columns, [r[: len(columns)] for r in rows]) if columns else "")
    try:
        read_trace(path)
    except InputError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(
    good=st.lists(st.tuples(st.floats(0, 100), st.floats(-5, 50)), min_size=1, max_size=5),
    bad=st.sampled_from(["nan", "inf", "-1", "", "abc"]),
    where=st.sampled_from(["time_s", "throughput_mbps"]),
)
def test_one_bad_value_names_file_and_line(tmp_path, good, bad, where):
    rows = [("d0", i * 1.0, abs(v)) for i, (_, v) in enumerate(good)]
    frame = pd.DataFrame(rows, columns=["device", "time_s", "throughput_mbps"])
    frame["ref_bandwidth_hz"] = 5e6
    frame[where] = frame[where].astype(object)
    frame.loc[len(frame) - 1, where] = bad
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(InputError) as exc:
        read_trace(path)
    assert str(path) in str(exc.value)
    if where == "throughput_mbps" or len(frame) == 1:  # a bad time may also break the order
        assert f"line {len(frame) + 1}" in str(exc.value)


@SETTINGS
@given(
    drop=st.sets(st.sampled_from(list(PROFILE_COLUMNS)), max_size=3),
    column=st.sampled_from(
        ["fwd_s", "peak_memory_bytes", "block", "batch_size", "trainable_params"]
    ),
    value=cell,
)
def test_profile_loader_never_crashes(tmp_path, drop, column, value):
    from desim.io.calibration import load_profile

    base = load_profile("cpu-reference").head(4).copy()
    base[column] = base[column].astype(object)
    base.loc[base.index[1], column] = value
    base = base.drop(columns=sorted(drop))
    path = tmp_path / "p.csv"
    base.to_csv(path, index=False)
    try:
        read_profile(path)
    except InputError as exc:
        assert str(path) in str(exc)
        if drop:
            assert "lacks" in str(exc) or "missing" in str(exc) or "column" in str(exc)


@pytest.mark.parametrize("content", ["", "\n", "device,time_s\n", "\x00\x01\x02", "a,b\n1,2\n"])
def test_degenerate_trace_files(tmp_path, content):
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(InputError, match="x.csv"):
        read_trace(path)
