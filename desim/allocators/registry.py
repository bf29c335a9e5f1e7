"""The allocator registry: one dict, one decorator, lookup by name (STYLE §4).

Library code takes allocator instances; only the CLI, sweeps and scenarios use names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from desim.allocators.base import Allocator
from desim.errors import DesimError, ScenarioError, UnknownNameError, did_you_mean


@dataclass(frozen=True)
class AllocatorInfo:
    """A registered allocator: its name, class and one-line description."""

    name: str
    cls: type[Allocator]
    description: str

    def parameters(self) -> dict[str, str]:
        """Parameter name → ``"type = default"`` text, for listings."""
        out = {}
        for pname, f in self.cls.model_fields.items():
            ann = getattr(f.annotation, "__name__", str(f.annotation))
            out[pname] = f"{ann} = {f.default!r}"
        return out


ALLOCATORS: dict[str, AllocatorInfo] = {}


def register(name: str, description: str) -> Callable[[type[Allocator]], type[Allocator]]:
    """Class decorator adding an allocator to :data:`ALLOCATORS` under ``name``."""

    def deco(cls: type[Allocator]) -> type[Allocator]:
        if name in ALLOCATORS:
            raise ValueError(f"allocator {name!r} is already registered")
        cls.registry_name = name
        ALLOCATORS[name] = AllocatorInfo(name, cls, description)
        return cls

    return deco


def allocator_info(name: str) -> AllocatorInfo:
    """Look up a registered allocator; the error lists the known names."""
    try:
        return ALLOCATORS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown allocator {name!r}; known: {', '.join(sorted(ALLOCATORS))}"
            f"{did_you_mean(name, ALLOCATORS)}"
        ) from None


def make_allocator(name: str, params: Mapping[str, Any] | None = None) -> Allocator:
    """Build the allocator ``name`` with validated ``params``.

    Raises:
        UnknownNameError: for an unknown allocator name.
        ScenarioError: naming each bad parameter and the allowed ones.
    """
    info = allocator_info(name)
    try:
        return info.cls(**dict(params or {}))
    except ValidationError as exc:
        probs = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                known = ", ".join(info.cls.model_fields) or "none"
                hint = did_you_mean(key, info.cls.model_fields)
                probs.append(f"allocator.{key}: unknown parameter of {name!r} "
                             f"(known: {known}{hint})")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                probs.append(f"allocator.{key}: {msg} (got {err.get('input')!r})")
        raise ScenarioError("; ".join(probs)) from None


def check_allocator(name: str, params: Mapping[str, Any] | None, source: str) -> None:
    """Check a scenario's ``[allocator]`` section by building the allocator once.

    Loaders call it after validating a scenario (the scenario itself imports no allocator).

    Args:
        name: the registered allocator name.
        params: its parameters.
        source: where the scenario came from, for the message (a file path, a sweep run).

    Raises:
        ScenarioError: ``<source>: allocator: <why>``; an unknown name lists the known names.
    """
    try:
        make_allocator(name, params)
    except DesimError as exc:
        raise ScenarioError(f"{source}: allocator: {exc}") from None
