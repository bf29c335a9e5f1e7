"""The ``[devices]`` section: an explicit list, or a seeded population of distributions."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import (
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from desim.errors import ScenarioError
from desim.scenario.base import (
    FiniteFloat,
    NonNegFloat,
    PositiveFloat,
    _Frozen,
    format_validation_error,
)


class Uniform(_Frozen):
    """Uniform distribution on ``[low, high]``."""

    dist: Literal["uniform"] = Field(description="Distribution kind.")
    low: FiniteFloat = Field(description="Lower bound.")
    high: FiniteFloat = Field(description="Upper bound (at least `low`).")

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values."""
        return rng.uniform(self.low, self.high, n)


class LogUniform(_Frozen):
    """Log-uniform distribution on ``[low, high]`` (both > 0)."""

    dist: Literal["loguniform"] = Field(description="Distribution kind.")
    low: PositiveFloat = Field(description="Lower bound (positive).")
    high: PositiveFloat = Field(description="Upper bound (at least `low`).")

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values."""
        return np.exp(rng.uniform(np.log(self.low), np.log(self.high), n))


class Choice(_Frozen):
    """Discrete choice among ``values`` with optional ``weights``."""

    dist: Literal["choice"] = Field(description="Distribution kind.")
    values: Annotated[list[FiniteFloat], Field(min_length=1)] = Field(
        description="The values to choose among."
    )
    weights: list[NonNegFloat] | None = Field(
        default=None, description="Relative weight of each value; unset: equally likely."
    )

    @model_validator(mode="after")
    def _weights(self) -> Choice:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError("weights must have as many entries as values")
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be zero")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values."""
        p = None if self.weights is None else np.asarray(self.weights) / sum(self.weights)
        return rng.choice(np.asarray(self.values, dtype=float), size=n, p=p)


Distribution = Annotated[Uniform | LogUniform | Choice, Field(discriminator="dist")]
DistOrValue = FiniteFloat | Distribution


def _sample(spec: DistOrValue, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(spec, int | float):
        return np.full(n, float(spec))
    return spec.sample(rng, n)


class DeviceSpec(_Frozen):
    """One edge device.

    Attributes:
        name: unique device name.
        hardware: hardware class naming a cost profile.
        speed_factor: speed relative to the hardware class profile (σ_k).
        memory_bytes: memory budget available to fine-tuning (M_k).
        tx_power_dbm: uplink transmit power (p_k).
        distance_m: distance to the edge server (drives path loss).
    """

    name: Annotated[str, Field(min_length=1)] = Field(description="Unique device name.")
    hardware: str = Field(
        default="cpu-reference",
        description=(
            "Hardware class, naming a cost profile (`cost.profiles`)."
        ),
    )
    speed_factor: PositiveFloat = Field(
        default=1.0, description="Speed σ_k relative to the hardware class's profile."
    )
    memory_bytes: PositiveFloat = Field(
        default=2e9, description="Memory budget M_k available to fine-tuning."
    )
    tx_power_dbm: FiniteFloat = Field(default=23.0, description="Uplink transmit power p_k.")
    distance_m: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = Field(
        default=100.0,
        description=(
            "Distance to the edge server (path loss; unused with a gain trace)."
        ),
    )


class PopulationSpec(_Frozen):
    """A seeded population of devices; each attribute is a number or a distribution.

    Unless ``seed`` pins it, the population is a draw of the run (:func:`resolve_devices`).
    """

    count: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=20, description="Number of devices K."
    )
    seed: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description=(
            "Seed of the population draw; unset: drawn from the run's `population` stream, so "
            "every `run.seed` gives its own population. Pin it to keep one population across "
            "seeds (the channel, compute and faults still vary with `run.seed`)."
        ),
    )
    hardware: str = Field(default="cpu-reference", description="Hardware class of every device.")
    name_prefix: str = Field(
        default="dev", description="Device names are this prefix and a zero-padded index."
    )
    speed_factor: DistOrValue = Field(
        default=1.0, description="Speed factor σ_k: a number or a distribution."
    )
    memory_bytes: DistOrValue = Field(
        default=2e9, description="Memory budget M_k: a number or a distribution."
    )
    tx_power_dbm: DistOrValue = Field(
        default=23.0, description="Transmit power p_k: a number or a distribution."
    )
    distance_m: DistOrValue = Field(
        default=100.0, description="Distance to the server: a number or a distribution."
    )


class DevicesSpec(_Frozen):
    """Devices as an explicit ``list`` or a generated ``population`` (exactly one)."""

    # TOML and JSON have arrays, not tuples: the sequence is lax, its items stay strict
    list: Annotated[tuple[DeviceSpec, ...], Strict(False)] | None = Field(
        default=None, description="Explicit devices (`[[devices.list]]` entries)."
    )
    population: PopulationSpec | None = Field(
        default=None, description="A seeded population of devices."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DevicesSpec:
        if (self.list is None) == (self.population is None):
            raise ValueError("give exactly one of devices.list or devices.population")
        if self.list is not None:
            names = [d.name for d in self.list]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"duplicate device names: {sorted(dup)}")
            if not names:
                raise ValueError("devices.list must not be empty")
        return self


def resolve_devices(spec: DevicesSpec, rng: np.random.Generator) -> tuple[DeviceSpec, ...]:
    """Expand a devices section into concrete devices.

    Args:
        spec: the devices section.
        rng: the run's ``population`` stream, drawn from only when ``population.seed`` is
            unset; a pinned seed draws from its own generator, the same for every run seed.

    Returns:
        The devices, in order; the same for the same seed (pinned, or the run's).
    """
    if spec.list is not None:
        return spec.list
    pop = spec.population
    assert pop is not None
    if pop.seed is not None:
        rng = np.random.default_rng(pop.seed)
    n = pop.count
    columns = {
        key: _sample(getattr(pop, key), rng, n)
        for key in ("speed_factor", "memory_bytes", "tx_power_dbm", "distance_m")
    }
    width = len(str(n - 1))
    try:
        return tuple(
            DeviceSpec(
                name=f"{pop.name_prefix}{i:0{width}d}",
                hardware=pop.hardware,
                **{key: float(col[i]) for key, col in columns.items()},
            )
            for i in range(n)
        )
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, "devices.population")) from None
