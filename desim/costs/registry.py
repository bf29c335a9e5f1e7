"""The cost-model registry: a scenario's ``[cost]`` section names a model and its parameters.

Each cost model registers a builder under its name with its own parameter model (STYLE §4)::

    @COST_MODELS.register("analytic", "FLOP and byte counts at a sustained throughput",
                          AnalyticParams)
    def build_analytic(params: AnalyticParams, inputs: CostInputs) -> CostModel: ...

The ``[cost]`` section is ``model = "<name>"`` and that model's parameters as keys beside it
(:class:`desim.scenario.components.CostSpec`). They are checked where scenarios are loaded
(:func:`check_cost`, from :func:`desim.engine.checks.check_components`) and built where the
simulation is assembled (:func:`build_cost_model`). A builder reads files only through
:attr:`CostInputs.read_profile` and :attr:`CostInputs.read_class`, so checking a scenario reads
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desim.errors import DesimError, ScenarioError, UnknownNameError
from desim.registry import Params, Registry, validate_section

if TYPE_CHECKING:
    import pandas as pd

    from desim.costs.base import CostModel
    from desim.io.hosts import CalibratedClass

#: reads a profile reference (a shipped hardware-class name, a CSV or a folder of them) into
#: its files and their tables, as :func:`desim.io.calibration.load_profile_files` does
ProfileReader = Callable[[str], list[tuple[Path, "pd.DataFrame"]]]
#: reads a calibrated class file (``desim profile --calibrate``), as
#: :func:`desim.io.hosts.read_class_file` does
ClassReader = Callable[[str], "CalibratedClass"]


def _read_class_file(ref: str) -> CalibratedClass:
    from desim.io.hosts import read_class_file

    return read_class_file(ref)


class CostParams(Params):
    """Base of cost-model parameter models: strict, frozen, unknown keys refused by name."""

    def references(self) -> tuple[str, ...]:
        """The profile references the model reads (names or paths); none by default.

        Sweeps hash the files among them into the run key.
        """
        return ()


@dataclass(frozen=True)
class CostInputs:
    """What a cost model is built from besides its parameters.

    Attributes:
        classes: the hardware classes of the scenario's devices, sorted.
        read_profile: reads one profile reference (:data:`ProfileReader`); the assembly
            passes :func:`desim.io.calibration.load_profile_files`, warning about what it reads.
        read_class: reads a calibrated class file (:data:`ClassReader`).
    """

    classes: tuple[str, ...]
    read_profile: ProfileReader
    read_class: ClassReader = field(default=_read_class_file)


CostModelBuilder = Callable[[Any, CostInputs], "CostModel"]

COST_MODELS: Registry[CostModelBuilder] = Registry("cost model")


def cost_params(name: str, params: Mapping[str, Any] | None) -> CostParams:
    """``name``'s validated parameters; keys of another cost model are dropped silently.

    The loader has warned about those keys (:func:`check_cost`).

    Raises:
        UnknownNameError: for an unknown cost model (the message lists the known ones).
        ScenarioError: ``cost.<key>: <why>`` for each bad parameter.
    """
    validated = validate_section(COST_MODELS, name, params, "cost", quiet=True)
    assert isinstance(validated, CostParams)
    return validated


def check_cost(name: str, params: Mapping[str, Any] | None, source: str,
               expected: Collection[str] = ()) -> None:
    """Check a scenario's ``[cost]`` section: a registered model and its own parameters.

    A key of another cost model (``profiles`` under ``model = "analytic"``) is ignored with a
    :class:`~desim.errors.DesimWarning` naming it.

    Args:
        name: the ``cost.model`` name.
        params: every other key of the section.
        source: where the scenario came from, for the message (a file path, a sweep run).
        expected: cost models a sweep varies over (their keys are ignored without a warning).

    Raises:
        ScenarioError: ``<source>: cost.model: <why>`` for an unknown model (listing the known
            ones), ``<source>: cost.<key>: <why>`` for a bad parameter.
    """
    try:
        validate_section(COST_MODELS, name, params, "cost", expected=expected)
    except UnknownNameError as exc:
        raise ScenarioError(f"{source}: cost.model: {exc}") from None
    except DesimError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def build_cost_model(name: str, params: Mapping[str, Any] | None,
                     inputs: CostInputs) -> CostModel:
    """The cost model ``name`` with its validated ``params`` (:func:`cost_params`)."""
    return COST_MODELS.get_obj(name)(cost_params(name, params), inputs)
