"""Check a validated scenario's named components against their registries.

A scenario (:mod:`desim.scenario`) imports no implementation, so the names it gives (the
allocator, the scheme, the cost model, the channel and compute kinds) and each component's
parameters are checked here, where scenarios are loaded (:func:`desim.io.files.load_scenario`)
and sweeps expanded, before anything runs. Each check raises
:class:`~desim.errors.ScenarioError` ``<source>: <section>: <why>``.
"""

from __future__ import annotations

from desim.scenario.model import Scenario


def check_components(scenario: Scenario, source: str) -> None:
    """Validate every registered component a scenario names, with its parameters."""
    # lazily: reading a profile or a trace needs no allocator (nor scipy)
    from desim.allocators import check_allocator

    check_allocator(scenario.allocator.name, scenario.allocator.params, source)
