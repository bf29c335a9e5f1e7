"""Channel kinds, compute kinds and trace formats: the registry shape of every component kind.

A ``[channel]`` or ``[compute]`` section names a registered ``kind``; every other key is one of
that kind's parameters, validated by the kind's own model where the scenario is loaded. A key of
another kind of the same section is ignored with one warning naming it (after its value passed
that kind's checks); a key no kind knows is an error listing the kind's parameters.
"""

import re
import warnings

import numpy as np
import pytest

from desim.errors import DesimWarning, ScenarioError
from desim.io.scenario import apply_overrides, read_toml
from desim.io.shipped import default_scenario_path
from desim.registry import NoParams
from desim.scenario.components import ChannelSpec, ComputeSpec
from desim.scenario.devices import DeviceSpec
from desim.scenario.model import validate_scenario
from desim.world.channel_kinds import CHANNEL_KINDS, ChannelContext, RayleighParams
from desim.world.compute_kinds import COMPUTE_KINDS
from desim.world.importers import TRACE_FORMATS
from desim.world.kinds import check_kinds, section_params

SOURCE = "default scenario"


def checked(*overrides: str):
    """The built-in scenario with ``overrides``, validated and its kinds checked."""
    data = apply_overrides(read_toml(default_scenario_path()), list(overrides))
    scenario = validate_scenario(data, SOURCE)
    check_kinds(scenario, SOURCE)
    return scenario


def warnings_of(*overrides: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checked(*overrides)
    return [str(w.message) for w in caught if issubclass(w.category, DesimWarning)]


def refused(*overrides: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DesimWarning)
        with pytest.raises(ScenarioError) as info:
            checked(*overrides)
    return str(info.value)


# --- the registries -----------------------------------------------------------------------------


def test_every_kind_and_format_is_registered_with_its_own_parameters():
    assert list(CHANNEL_KINDS) == ["rayleigh", "static", "generated", "trace"]
    assert list(COMPUTE_KINDS) == ["constant", "generated", "trace"]
    assert list(TRACE_FORMATS) == ["ns3", "mahimahi", "pensieve", "5gophers", "tidy"]
    assert set(CHANNEL_KINDS["rayleigh"].params.model_fields) == {
        "path_loss", "carrier_ghz", "coherence_s", "duration_s", "chunk_segments"}
    assert set(CHANNEL_KINDS["static"].params.model_fields) == {"path_loss", "carrier_ghz"}
    assert set(CHANNEL_KINDS["trace"].params.model_fields) == {
        "path", "mapping", "end_policy", "throughput_scale"}
    assert "shadowing" in CHANNEL_KINDS["generated"].params.model_fields
    assert COMPUTE_KINDS["constant"].params is NoParams
    assert set(COMPUTE_KINDS["trace"].params.model_fields) == {"path", "mapping", "end_policy"}
    for registry in (CHANNEL_KINDS, COMPUTE_KINDS, TRACE_FORMATS):
        for entry in registry.values():
            assert entry.description
            for name, field in entry.params.model_fields.items():
                assert field.description, f"{entry.name}.{name} has no description"


def test_the_scenario_keeps_the_kind_and_every_other_key_as_a_parameter():
    spec = ChannelSpec(kind="trace", path="x.csv", mapping={"a": "b"})
    assert spec.params == {"path": "x.csv", "mapping": {"a": "b"}} and spec.path == "x.csv"
    assert ChannelSpec.model_validate(spec.model_dump()) == spec
    assert ChannelSpec().kind == "rayleigh" and ChannelSpec().path is None
    assert ComputeSpec().kind == "constant"
    assert ComputeSpec(kind="generated", load_mean=0.2).params == {"load_mean": 0.2}


# --- names and parameters are refused by name ---------------------------------------------------


@pytest.mark.parametrize("section, known", [
    ("channel", "generated, rayleigh, static, trace"),
    ("compute", "constant, generated, trace"),
])
def test_an_unknown_kind_lists_the_known_ones(section, known):
    assert refused(f'{section}.kind="nope"') == (
        f"{SOURCE}: {section}.kind: unknown {section} kind 'nope'; known: {known}")


@pytest.mark.parametrize("overrides, message", [
    (['channel.kind="rayleigh"', "channel.coherence_s=-1.0"],
     "channel.coherence_s: Input should be greater than 0 (got -1.0)"),
    (['channel.kind="static"', 'channel.carrier_ghz="3.5"'],
     "channel.carrier_ghz: Input should be a valid number (got '3.5')"),
    (['channel.kind="generated"', "channel.chunk_segments=0"],
     "channel.chunk_segments: Input should be greater than or equal to 1 (got 0)"),
    (['channel.path=""'],
     "channel.path: kind = 'trace' needs a tidy trace file (shipped:NAME or a path) (got '')"),
    (['channel.mapping="cylic"'],
     "channel.mapping: must be 'cyclic', 'random-offset' or a table of scenario device = "
     "trace device (got 'cylic')"),
    (['compute.kind="generated"', "compute.load_mean=1.5"],
     "compute.load_mean: Input should be less than 1 (got 1.5)"),
    (['compute.kind="trace"', 'compute.end_policy="again"'],
     "compute.end_policy: Input should be 'loop' or 'hold' (got 'again')"),
])
def test_a_bad_parameter_is_refused_by_the_kinds_own_model(overrides, message):
    assert refused(*overrides) == f"{SOURCE}: {message}"


def test_a_key_no_kind_knows_lists_the_kinds_parameters():
    assert refused("channel.coherense_s=0.1") == (
        f"{SOURCE}: channel.coherense_s: unknown parameter of 'trace' "
        "(known: path, mapping, end_policy, throughput_scale)")
    assert refused('compute.kind="constant"', "compute.speed=2.0") == (
        f"{SOURCE}: compute.speed: unknown parameter of 'constant' (known: none)")


# --- a key of another kind ----------------------------------------------------------------------


def test_a_key_of_another_kind_is_ignored_with_one_warning_naming_it():
    # the built-in scenario replays a trace: path and mapping are parameters of kind "trace"
    assert warnings_of() == []
    assert sorted(warnings_of('channel.kind="rayleigh"')) == [
        "channel.mapping is a parameter of 'trace', not of 'rayleigh': ignored",
        "channel.path is a parameter of 'trace', not of 'rayleigh': ignored",
    ]
    assert warnings_of('channel.kind="static"', "channel.coherence_s=0.5") == [
        "channel.coherence_s is a parameter of 'rayleigh', not of 'static': ignored",
        "channel.mapping is a parameter of 'trace', not of 'static': ignored",
        "channel.path is a parameter of 'trace', not of 'static': ignored",
    ]
    # the builders get the kind's own parameters, the foreign keys dropped without a word
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DesimWarning)
        spec = checked('channel.kind="rayleigh"').channel
    with warnings.catch_warnings():
        warnings.simplefilter("error", DesimWarning)
        assert section_params(CHANNEL_KINDS, "channel", "rayleigh", spec.params) == (
            RayleighParams())


def test_a_key_of_another_kind_must_still_have_a_valid_value():
    # kind "trace" ignores shadowing, but 1 is not a boolean for the kind that reads it
    assert refused("channel.shadowing=1") == (
        f"{SOURCE}: channel.shadowing: Input should be a valid boolean (got 1)")
    assert refused('compute.kind="constant"', "compute.mean_up_s=-5.0") == (
        f"{SOURCE}: compute.mean_up_s: Input should be greater than 0 (got -5.0)")


# --- builders -----------------------------------------------------------------------------------


def test_a_kinds_builder_takes_its_validated_parameters():
    devices = (DeviceSpec(name="a", tx_power_dbm=23.0, distance_m=100.0),)
    params = CHANNEL_KINDS.validate("static", {"path_loss": "free-space"}, "channel")
    ctx = ChannelContext(devices, -174.0, np.random.default_rng(0), lambda ref: None)
    channel = CHANNEL_KINDS.get_obj("static")(params, ctx)
    # free space at 3.5 GHz over d3D = sqrt(100² + 8.5²) m (BS 10 m, UT 1.5 m)
    loss_db = 32.45 + 20 * np.log10(3.5) + 20 * np.log10(np.hypot(100.0, 8.5))
    assert channel.snr_coef_hz(7.0)[0] == pytest.approx(10 ** ((23.0 - loss_db + 174.0) / 10))


def test_switching_the_kind_of_the_built_in_scenario_runs():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scenario = load_scenario(None, ['channel.kind="rayleigh"', "channel.duration_s=5.0",
                                        'compute.kind="constant"', "run.rounds=1"])
        sim = build_simulation(scenario)
    ignored = sorted(re.sub(r" is a parameter.*", "", str(w.message)) for w in caught)
    assert ignored == ["channel.mapping", "channel.path", "compute.mapping", "compute.path"]
    # 5 s of 0.1 s fading blocks, then the realisation repeats
    np.testing.assert_array_equal(sim.channel.snr_coef_hz(1.23), sim.channel.snr_coef_hz(6.23))
    assert not np.array_equal(sim.channel.snr_coef_hz(1.23), sim.channel.snr_coef_hz(1.33))
    assert sim.compute.speed(3.0).tolist() == [1.0] * 20
