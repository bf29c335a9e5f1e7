"""The cost-model registry: names, each model's own parameters, and the ``[cost]`` section."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from desim.costs.analytic import REFERENCE_CLASS, AnalyticCostModel, AnalyticParams
from desim.costs.profiled import BorrowedProfile, ProfiledCostModel, ProfiledParams
from desim.costs.registry import (
    COST_MODELS,
    CostInputs,
    build_cost_model,
    check_cost,
    cost_params,
)
from desim.engine.assembly import build_simulation
from desim.errors import DesimWarning, ScenarioError, UnknownNameError
from desim.io.calibration import load_profile_files
from desim.io.scenario import load_scenario


def no_files(ref: str) -> list[tuple[Path, pd.DataFrame]]:
    raise AssertionError(f"read {ref!r}, but this model reads no profile")


def test_the_registry_lists_both_models_with_their_own_parameters():
    assert sorted(COST_MODELS) == ["analytic", "profiled"]
    assert COST_MODELS["analytic"].params is AnalyticParams
    assert COST_MODELS["profiled"].params is ProfiledParams
    assert list(COST_MODELS["analytic"].parameters()) == ["analytic_flops_per_s"]
    assert list(COST_MODELS["profiled"].parameters()) == [
        "profiles", "fallback", "analytic_flops_per_s"]
    for entry in COST_MODELS.values():  # the docs' key tables need every description
        assert entry.description
        assert all(f.description for f in entry.params.model_fields.values())


def test_an_unknown_model_lists_the_known_ones():
    with pytest.raises(ScenarioError, match=r"^default scenario: cost\.model: unknown cost "
                                            r"model 'roofline'; known: analytic, profiled$"):
        load_scenario(None, ['cost.model="roofline"'])
    with pytest.raises(UnknownNameError, match="known: analytic, profiled"):
        build_cost_model("roofline", {}, CostInputs((), no_files))


@pytest.mark.parametrize("override, message", [
    ("cost.analytic_flops_per_s=-1.0",
     r"cost\.analytic_flops_per_s: Input should be greater than 0 \(got -1\.0\)"),
    ('cost.fallback="maybe"', r"cost\.fallback: Input should be 'analytic' or 'none'"),
    ('cost.profiles.gpu={profile="cpu-reference", speed=0.0}',
     r"cost\.profiles\.gpu\.speed: Input should be greater than 0"),
    ("cost.profiles.gpu=3", r"cost\.profiles\.gpu"),
    ("cost.flops_per_s=1e12",
     r"cost\.flops_per_s: unknown parameter of 'profiled' \(known: profiles, fallback, "
     r"analytic_flops_per_s; did you mean 'analytic_flops_per_s'\?\)"),
])
def test_a_bad_parameter_is_refused_at_load_by_its_key(override, message):
    with pytest.raises(ScenarioError, match=r"^default scenario: .*" + message):
        load_scenario(None, [override])


def test_an_unknown_key_of_the_analytic_model_lists_its_own_keys():
    with pytest.raises(ScenarioError, match=r"cost\.speed: unknown parameter of 'analytic' "
                                            r"\(known: analytic_flops_per_s\)"):
        check_cost("analytic", {"speed": 2.0}, "scenario")


def test_a_key_of_the_other_model_is_ignored_with_a_warning():
    with pytest.warns(DesimWarning) as caught:
        scenario = load_scenario(None, ['cost.model="analytic"'])  # default.toml sets profiles
    messages = sorted(str(w.message) for w in caught if w.category is DesimWarning)
    assert messages == [
        "cost.fallback is a parameter of 'profiled', not of 'analytic': ignored",
        "cost.profiles is a parameter of 'profiled', not of 'analytic': ignored",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DesimWarning)  # building does not warn again
        sim = build_simulation(scenario.model_copy(update={"run": scenario.run.model_copy(
            update={"rounds": 1})}))
    assert isinstance(sim.cost_model, AnalyticCostModel)
    assert sim.cost_source == ["analytic"]


def test_the_default_scenario_warns_about_no_cost_key():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DesimWarning)
        scenario = load_scenario(None, [])
    assert scenario.cost.model == "profiled"
    params = cost_params(scenario.cost.model, scenario.cost.params)
    assert params == ProfiledParams(profiles={"cpu-reference": {"profile": "cpu-reference"}})
    assert params.references() == ("cpu-reference",)


def test_check_cost_names_the_source():
    with pytest.raises(ScenarioError, match=r"^run 7: cost\.analytic_flops_per_s: "):
        check_cost("analytic", {"analytic_flops_per_s": 0.0}, "run 7")
    check_cost("profiled", {}, "run 7")  # every parameter has a default


def test_the_profiled_builder_reads_profiles_only_through_its_inputs():
    table = load_profile_files("cpu-reference")
    asked = []

    def reader(ref: str) -> list[tuple[Path, pd.DataFrame]]:
        asked.append(ref)
        return table

    params = {"profiles": {"cpu-reference": "cpu-reference",
                           "orin": {"profile": "cpu-reference", "speed": 14.0}},
              "fallback": "none"}
    model = build_cost_model("profiled", params, CostInputs(("orin",), reader))
    assert asked == ["cpu-reference", "cpu-reference"]
    assert isinstance(model, ProfiledCostModel)
    assert model.fallback is None and dict(model.class_speed) == {"orin": 14.0}
    assert cost_params("profiled", params).references() == ("cpu-reference", "cpu-reference")
    assert cost_params("profiled", params).profiles["orin"] == BorrowedProfile(
        profile="cpu-reference", speed=14.0)


def test_the_analytic_builder_prices_the_device_classes_and_the_reference_class():
    model = build_cost_model("analytic", {"analytic_flops_per_s": 1e12},
                             CostInputs(("orin",), no_files))
    assert isinstance(model, AnalyticCostModel)
    assert model.flops_per_s == 1e12
    assert dict(model.hardware_speed) == {"orin": 1.0, REFERENCE_CLASS: 1.0}
    assert cost_params("analytic", {}).references() == ()


def test_profile_paths_resolve_from_the_scenario_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "scenario.toml"
    path.write_text('[devices.population]\ncount = 4\n\n[cost.profiles]\n'
                    'cpu-reference = "cpu-reference"\ngpu = { profile = "gpu.csv", speed = 2.0 }\n'
                    'tpu = "../tpu.csv"\n')
    profiles = load_scenario(path).cost.params["profiles"]
    assert profiles["cpu-reference"] == "cpu-reference"  # a shipped name, not a path
    assert Path(profiles["gpu"]["profile"]) == tmp_path / "sub" / "gpu.csv"
    assert Path(profiles["tpu"]).resolve() == tmp_path / "tpu.csv"


def test_sweep_run_keys_depend_on_the_cost_parameters_only():
    from desim.experiments.sweep_spec import run_key

    a, b = load_scenario(None, []), load_scenario(None, [])
    assert run_key(a) == run_key(b)
    assert run_key(a) != run_key(load_scenario(None, ["cost.analytic_flops_per_s=1e11"]))
