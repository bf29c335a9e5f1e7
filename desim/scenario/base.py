"""What every scenario section shares: frozen strict models and the number types."""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from desim.errors import closest

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Frozen(BaseModel):
    # strict: a bool is not an int and a string is not a number (``rounds = true`` and
    # ``speed_factor = "2"`` are refused, not coerced); an int is still a valid float
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)


# labels pydantic adds to an error's path for the members of a union; never a scenario key
_UNION_MEMBERS = frozenset({"float", "int", "str", "bool", "none", "uniform", "loguniform",
                            "choice", "constrained-str", "constrained-float", "constrained-int"})
_TABLE_MSG = "Input should be a valid dictionary or object to extract fields from"


def _user_loc(loc: tuple[int | str, ...], key_last: bool = False) -> str:
    """The user's dotted key of an error location, without pydantic's union labels.

    With ``key_last`` the last element is a key the user wrote (an unknown key), kept even if
    it reads like a label (a key named ``none``).
    """
    parts = [str(p) for p in loc]
    last = parts.pop() if key_last and parts else None
    kept = [p for p in parts if "[" not in p and p not in _UNION_MEMBERS
            and not p.startswith("function-")]
    return ".".join(kept if last is None else [*kept, last])


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's type can hold (through ``Annotated``, unions and ``None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _keys_at(model: type[BaseModel], parents: list[str]) -> set[str]:
    """The keys a scenario may hold at the dotted location ``parents`` of ``model``."""
    models = [model]
    for part in parents:
        models = [inner for m in models if (f := m.model_fields.get(part)) is not None
                  for inner in _models_in(f.annotation)]
    return {f.alias or name for m in models for name, f in m.model_fields.items()}


def _unknown_key(model: type[BaseModel] | None, loc: str) -> str:
    """``unknown key``, with the closest key ``model`` knows at that location if any."""
    *parents, key = loc.split(".")
    close = None if model is None else closest(key, _keys_at(model, parents))
    return "unknown key" if close is None else f"unknown key (did you mean {close!r}?)"


def format_validation_error(exc: ValidationError, prefix: str = "",
                            model: type[BaseModel] | None = None) -> str:
    """One readable part per problem key: ``dotted.field: message (got value)``.

    A value that fails every member of a union (a number or a distribution table) is one part
    listing what each member expected. With the validated ``model``, an unknown key names the
    closest key it knows there (``run.rouds: unknown key (did you mean 'rounds'?)``).
    """
    by_key: dict[str, list[Any]] = {}
    unknown: dict[str, str] = {}  # an unknown key's message by its location
    for err in exc.errors():
        own = loc = _user_loc(err["loc"], key_last=err["type"] == "extra_forbidden")
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        if err["type"] == "extra_forbidden":
            unknown[loc] = _unknown_key(model, own)
        by_key.setdefault(loc or "<scenario>", []).append(err)
    lines = []
    for loc, errs in by_key.items():
        msgs = []
        for err in errs:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = unknown.get(loc, "unknown key")
            msg = "Input should be a table" if msg == _TABLE_MSG else msg
            if msg not in msgs:
                msgs.append(msg)
        msg = msgs[0] + "".join(" or " + m.removeprefix("Input should be ") for m in msgs[1:])
        got = errs[0].get("input")
        shown = "" if errs[0]["type"] in ("missing", "extra_forbidden") else f" (got {_short(got)})"
        if isinstance(got, dict):
            shown = ""
        lines.append(f"{loc}: {msg}{shown}")
    return "; ".join(lines)
