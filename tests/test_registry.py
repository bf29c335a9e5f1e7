"""The one registry shape every component kind uses (desim.registry)."""

import pytest
from pydantic import BaseModel, ConfigDict, Field

from desim.errors import ScenarioError, UnknownNameError
from desim.registry import NoParams, Registry


class Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    gain: float = Field(1.0, gt=0)


def make() -> Registry:
    reg: Registry = Registry("widget")
    reg.register("plain", "takes nothing")(object)
    reg.register("knobbed", "takes a gain", Knobs)(dict)
    return reg


def test_lookup_and_listing():
    reg = make()
    assert sorted(reg) == ["knobbed", "plain"] and len(reg) == 2
    assert reg.get_obj("knobbed") is dict
    assert reg["plain"].params is NoParams
    assert reg["knobbed"].parameters() == {"gain": "float = 1.0"}


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown widget 'nope'; known: knobbed, plain"):
        make()["nope"]


def test_registering_twice_is_a_bug():
    reg = make()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("plain", "again")(object)


def test_params_are_validated_by_the_components_own_model():
    reg = make()
    assert reg.validate("knobbed", {"gain": 2.0}, "w.params") == Knobs(gain=2.0)
    with pytest.raises(ScenarioError, match=r"w.params.gain: Input should be greater than 0"):
        reg.validate("knobbed", {"gain": -1.0}, "w.params")
    with pytest.raises(ScenarioError, match=r"w.params.gian: unknown parameter of 'knobbed' "
                                            r"\(known: gain; did you mean 'gain'\?\)"):
        reg.validate("knobbed", {"gian": 2.0}, "w.params")
    with pytest.raises(ScenarioError, match=r"unknown parameter of 'plain' \(known: none\)"):
        reg.validate("plain", {"x": 1}, "w.params")
