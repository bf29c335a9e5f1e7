"""Check a validated scenario's named components against their registries.

A scenario (:mod:`desim.scenario`) imports no implementation, so the names it gives (the
allocator, the scheme, the cost model, the channel and compute kinds) and each component's
parameters are checked here, where scenarios are loaded (:func:`desim.io.scenario.load_scenario`)
and sweeps expanded, before anything runs. Each check raises
:class:`~desim.errors.ScenarioError` ``<source>: <section>: <why>``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from desim.costs.registry import check_cost
from desim.errors import DesimError, ScenarioError, UnknownNameError
from desim.registry import validate_section
from desim.scenario.model import Scenario


def check_components(scenario: Scenario, source: str,
                     expected: Mapping[str, Collection[str]] | None = None) -> None:
    """Validate every registered component a scenario names, with its parameters.

    ``expected``: per section (``scheme``, ``cost``, ``channel``, ``compute``), the component
    names a sweep varies over; keys of those components are ignored without a warning.
    """
    # lazily: reading a profile or a trace needs no allocator (nor scipy)
    from desim.allocators import check_allocator
    from desim.world.kinds import check_kinds

    named = expected or {}
    check_allocator(scenario.allocator.name, scenario.allocator.params, source)
    check_cost(scenario.cost.model, scenario.cost.params, source, named.get("cost", ()))
    check_scheme(scenario, source, named.get("scheme", ()))
    check_kinds(scenario, source, named)


def check_scheme(scenario: Scenario, source: str, expected: Collection[str] = ()) -> None:
    """The ``[scheme]`` section: a registered name and that scheme's own parameters."""
    from desim.schemes import SCHEMES

    try:
        validate_section(SCHEMES, scenario.scheme.name, scenario.scheme.params, "scheme",
                         expected=expected)
    except UnknownNameError as exc:
        raise ScenarioError(f"{source}: scheme.name: {exc}") from None
    except DesimError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def resolved_scenario(scenario: Scenario) -> dict[str, Any]:
    """The scenario as JSON with every component section resolved by its own model.

    A component section holds only the keys a user gave; this fills in each parameter's
    default and drops the keys of other components (ignored with a warning at load), so
    run.json records every value a run used and equal runs get equal sweep keys however their
    keys were written. Call it on a checked scenario.
    """
    from desim.allocators import make_allocator
    from desim.costs.registry import cost_params
    from desim.schemes import SCHEMES
    from desim.world.channel_kinds import CHANNEL_KINDS
    from desim.world.compute_kinds import COMPUTE_KINDS
    from desim.world.kinds import section_params

    out: dict[str, Any] = scenario.model_dump(mode="json")
    sc = scenario
    resolved = {
        "allocator": ("name", sc.allocator.name,
                      make_allocator(sc.allocator.name, sc.allocator.params)),
        "cost": ("model", sc.cost.model, cost_params(sc.cost.model, sc.cost.params)),
        "scheme": ("name", sc.scheme.name,
                   validate_section(SCHEMES, sc.scheme.name, sc.scheme.params, "scheme",
                                    quiet=True)),
        "channel": ("kind", sc.channel.kind, section_params(CHANNEL_KINDS, "channel",
                                                             sc.channel.kind, sc.channel.params)),
        "compute": ("kind", sc.compute.kind, section_params(COMPUTE_KINDS, "compute",
                                                             sc.compute.kind, sc.compute.params)),
    }
    for section, (selector, name, params) in resolved.items():
        out[section] = {selector: name, **params.model_dump(mode="json")}
    # the planner's channel knowledge sits beside the allocator's parameters
    declared = {k: getattr(sc.allocator, k) for k in type(sc.allocator).model_fields}
    out["allocator"] = {**declared, **{k: v for k, v in out["allocator"].items() if k != "name"}}
    return out
