"""desim: a discrete-event simulator of device-edge cooperative fine-tuning (DEFT).

Importing ``desim`` has no side effects and never imports torch: the public API below is
loaded on first use. A run is a description, then its execution::

    import desim

    scenario = desim.load_scenario("my.toml", ["run.rounds=50", 'allocator.name="crunch"'])
    result = desim.build_simulation(scenario).run()
    desim.write_results(result, "results/my-run")

Public API (each name also lives in the module given in :data:`EXPORTS`):

- scenarios: :func:`load_scenario`, :func:`validate_scenario`, :class:`Scenario`;
- simulation: :func:`build_simulation`, :class:`Simulation`, :class:`RunResult`,
  :func:`write_results`;
- sweeps: :func:`load_sweep_spec`, :func:`expand`, :func:`run_sweep`;
- registries: :data:`ALLOCATORS` with :func:`register` and :func:`make_allocator` (allocators
  subclass :class:`Allocator`, see a :class:`RoundContext`, return an :class:`Allocation`) and
  :data:`FIGURES`;
- errors: :class:`DesimError` and its subclasses in :mod:`desim.errors`.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("desim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: public name -> the module that defines it (loaded on first access, PEP 562)
EXPORTS: dict[str, str] = {
    "load_scenario": "desim.io.scenario",
    "validate_scenario": "desim.scenario.model",
    "Scenario": "desim.scenario.model",
    "build_simulation": "desim.engine.assembly",
    "Simulation": "desim.engine.simulation",
    "RunResult": "desim.results",
    "write_results": "desim.io.outputs",
    "load_sweep_spec": "desim.experiments.sweep_spec",
    "expand": "desim.experiments.sweep_spec",
    "run_sweep": "desim.experiments.sweep",
    "ALLOCATORS": "desim.allocators",
    "register": "desim.allocators",
    "make_allocator": "desim.allocators",
    "Allocator": "desim.allocators",
    "RoundContext": "desim.allocators",
    "Allocation": "desim.allocators",
    "FIGURES": "desim.experiments.paper_figures.base",
    "DesimError": "desim.errors",
}

__all__ = ["__version__", *EXPORTS]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access."""
    if name not in EXPORTS:
        raise AttributeError(f"module 'desim' has no attribute {name!r}")
    value = getattr(import_module(EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
