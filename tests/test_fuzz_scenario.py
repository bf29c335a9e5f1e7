"""Fuzzing the scenario loader: every failure is one InputError naming the file and field."""

import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desim.cli.main import main
from desim.errors import InputError
from desim.io.scenario import load_scenario
from desim.io.shipped import default_scenario_path

BASE = tomllib.loads(default_scenario_path().read_text())
FIELDS = [(s, k) for s, sec in BASE.items() for k in sec if not isinstance(sec[k], dict)]
FIELDS += [("devices", "population")]

junk = st.one_of(
    st.none().map(lambda _: "x"),
    st.text(max_size=5),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=3), st.integers(), max_size=2),
)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + "}"
    raise TypeError(v)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(FIELDS), value=junk)
def test_any_value_in_any_field_validates_or_names_the_field(tmp_path, field, value):
    section, key = field
    try:
        scenario = load_scenario(None, [f"{section}.{key}={toml_value(value)}"])
    except InputError as exc:
        msg = str(exc)
        assert msg.startswith("default scenario: ") or "--set" in msg
        assert f"{section}" in msg
    else:
        assert scenario is not None


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_malformed_toml_files_are_input_errors(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as exc:
        load_scenario(path)
    assert str(path) in str(exc.value)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
    section=st.sampled_from(sorted(BASE)),
)
def test_unknown_keys_are_named(key, section):
    if key in BASE.get(section, {}) or section in ("allocator", "devices"):
        return  # allocator extras are its parameters; devices keys are tested elsewhere
    # a registered component's section names its parameters: "unknown parameter of 'trace' ..."
    with pytest.raises(InputError, match=rf"{section}\.{key}: unknown (key|parameter)"):
        load_scenario(None, [f"{section}.{key}=1"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=junk)
def test_cli_never_prints_a_traceback(capsys, value):
    code = main(
        [
            "run",
            "--rounds",
            "1",
            "--out",
            "/tmp/desim-fuzz-out",
            "--set",
            f"server.total_bandwidth_hz={toml_value(value)}",
        ]
    )
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert code in (0, 2, 3)
