"""One registry shape for every kind of component (STYLE §4).

Allocators, schemes, cost models, channel kinds, compute kinds, trace formats and figures each
keep a :class:`Registry`: a decorator adds an entry under a name, a lookup of an unknown name
raises an error that lists the known names, and an entry's parameters are validated by the
component's own pydantic model, with one message per bad key. This module is a leaf: it
imports no component, so a description (the scenario) can check a name through a registry
module without importing an implementation.

Example::

    SCHEMES: Registry[SchemeInfo] = Registry("scheme")

    @SCHEMES.register("fl-lora", "federated LoRA: every device trains adapters", FlLoraParams)
    class FlLora: ...
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from desim.errors import ScenarioError, UnknownNameError, did_you_mean, warn

T = TypeVar("T")


class Params(BaseModel):
    """Base of every component's parameter model: strict, frozen, unknown keys refused.

    Strict like the scenario: a bool is not an int and a string is not a number.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)


class NoParams(Params):
    """The parameters of a component that takes none: any key is refused by name."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: its name, the object, a one-line description and its params."""

    name: str
    obj: T
    description: str
    params: type[BaseModel] = NoParams

    def parameters(self) -> dict[str, str]:
        """Parameter name → ``"type = default"`` text, for listings and the docs."""
        out = {}
        for pname, f in self.params.model_fields.items():
            ann = getattr(f.annotation, "__name__", str(f.annotation))
            out[pname] = f"{ann} = {f.default!r}"
        return out


@dataclass
class Registry(Mapping[str, Entry[T]]):
    """Name → :class:`Entry`; read-only as a mapping, filled by :meth:`register`."""

    kind: str  # "scheme", "cost model", ...: used in messages
    _entries: dict[str, Entry[T]] = field(default_factory=dict)

    def register(
        self, name: str, description: str, params: type[BaseModel] = NoParams
    ) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; registering a name twice is a bug."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, obj, description, params)
            return obj

        return deco

    def __getitem__(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
                f"{did_you_mean(name, self._entries)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get_obj(self, name: str) -> T:
        """The registered object itself (a class or a function)."""
        return self[name].obj

    def validate(self, name: str, params: Mapping[str, Any] | None, where: str) -> BaseModel:
        """``name``'s parameters, validated by its own model.

        Args:
            name: a registered name (an unknown one lists the known names).
            params: the raw parameters, as read from a scenario or a sweep.
            where: the key path for messages, e.g. ``"scheme.params"``.

        Raises:
            UnknownNameError: for an unknown name.
            ScenarioError: one ``<where>.<key>: <why>`` per bad key; an unknown key lists the
                known ones.
        """
        entry = self[name]
        try:
            return entry.params(**dict(params or {}))
        except ValidationError as exc:
            raise ScenarioError(format_errors(exc, entry, where)) from None


def validate_section(
    registry: Registry[Any], name: str, params: Mapping[str, Any] | None, where: str,
    *, quiet: bool = False, expected: Collection[str] = ()
) -> BaseModel:
    """Like :meth:`Registry.validate`, but a key of another entry is ignored with a warning.

    A scenario section names one component and gives its parameters; when a user switches the
    component (``--set scheme.name=...``), keys meant for the previous one should not stop the
    run, and should not pass silently either. No warning is given for a key of an entry in
    ``expected``: a sweep that varies the component sets its entries' keys on purpose.
    """
    own = set(registry[name].params.model_fields)
    others = {k for e in registry.values() for k in e.params.model_fields} - own
    given = dict(params or {})
    foreign = sorted(set(given) & others)
    for key in [] if quiet else foreign:
        owners = sorted(e.name for e in registry.values() if key in e.params.model_fields)
        if set(owners) & set(expected):
            continue
        warn(f"{where}.{key} is a parameter of {', '.join(map(repr, owners))}, not of "
             f"{name!r}: ignored")
    return registry.validate(name, {k: v for k, v in given.items() if k not in foreign}, where)


def format_errors(exc: ValidationError, entry: Entry[Any], where: str) -> str:
    """One ``<where>.<key>: <why>`` per pydantic error, joined by ``; ``."""
    probs = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(entry.params.model_fields) or "none"
            hint = did_you_mean(key, entry.params.model_fields)
            probs.append(f"{where}.{key}: unknown parameter of {entry.name!r} "
                         f"(known: {known}{hint})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            probs.append(f"{where}.{key}: {msg} (got {err.get('input')!r})")
    return "; ".join(probs)
