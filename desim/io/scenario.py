"""Scenario files: read a scenario TOML, apply ``section.key=value`` overrides, resolve paths.

Reading turns every problem into an :class:`~desim.errors.InputError` naming the file and the
field or line. Relative file paths inside a scenario resolve from the scenario's folder.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from desim.errors import InputError, ScenarioError
from desim.io.shipped import SHIPPED_PREFIX, default_scenario_path
from desim.scenario.model import Scenario, validate_scenario


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, naming the file and line on error."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as a TOML literal, else as a string."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or len(path) < 2 or not all(path):
        raise ScenarioError(f"--set {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str | tuple[str, Any]]
) -> dict[str, Any]:
    """Return a copy of ``data`` with every override applied.

    Each override is a ``"section.key=value"`` string (value read as TOML) or a
    ``("section.key", value)`` pair (sweeps pass typed values this way).
    """
    out = copy.deepcopy(data)
    for item in overrides:
        if isinstance(item, str):
            path, value = parse_override(item)
            label = f"--set {item!r}"
        else:
            path, value = item[0].split("."), item[1]
            label = item[0]
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ScenarioError(f"{label}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _resolved(text: Any, base: Path) -> Any:
    if not isinstance(text, str) or not text or text.startswith(SHIPPED_PREFIX):
        return text
    p = Path(text).expanduser()
    return text if p.is_absolute() else str((base / p).resolve())


def _looks_like_path(text: Any, base: Path) -> bool:
    """A profile or model reference that names a file, not a shipped name."""
    return isinstance(text, str) and (
        "/" in text or os.sep in text or text.endswith((".csv", ".json", ".toml"))
        or (base / text).exists()
    )


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of parsed scenario data whose relative file paths are made absolute from ``base``.

    Paths inside a scenario or sweep spec resolve relative to that file's folder, as in every
    config format users know (paths on the command line stay relative to the working directory).
    The keys: ``channel.path``, ``compute.path``, ``scheme.kr_scores``, ``model.name`` when it
    names a ``.json`` config, and each ``cost.profiles`` entry that names a file or folder
    (``shipped:NAME`` and shipped hardware-class names are names, not paths).
    """
    out = copy.deepcopy(data)
    for section in ("channel", "compute"):
        node = out.get(section)
        if isinstance(node, dict) and "path" in node:
            node["path"] = _resolved(node["path"], base)
    scheme = out.get("scheme")
    if isinstance(scheme, dict) and isinstance(scheme.get("kr_scores"), str):
        scheme["kr_scores"] = _resolved(scheme["kr_scores"], base)
    model = out.get("model")
    if isinstance(model, dict) and _looks_like_path(model.get("name"), base):
        model["name"] = _resolved(model["name"], base)
    cost = out.get("cost")
    profiles = cost.get("profiles") if isinstance(cost, dict) else None
    if isinstance(profiles, dict):
        for cls, ref in profiles.items():
            if isinstance(ref, dict) and _looks_like_path(ref.get("profile"), base):
                ref["profile"] = _resolved(ref["profile"], base)
            elif _looks_like_path(ref, base):
                profiles[cls] = _resolved(ref, base)
    return out


def resolve_override(key: str, value: Any, base: Path) -> Any:
    """The value of one ``section.key`` override with a relative file path made absolute.

    Sweep specs use it: a path in ``[set]``, ``[grid]`` or ``[zip]`` resolves from the spec's
    folder, as :func:`resolve_paths` does for a scenario file.
    """
    node: Any = resolve_paths(apply_overrides({}, [(key, value)]), base)
    for part in key.split("."):
        node = node[part]
    return node


def load_scenario(
    path: str | Path | None = None, overrides: Iterable[str | tuple[str, Any]] = ()
) -> Scenario:
    """Read and validate a scenario TOML (the built-in default when ``path`` is ``None``).

    Args:
        path: scenario file, or ``None`` for the default scenario.
        overrides: ``section.key=value`` strings applied before validation.

    Raises:
        InputError: naming the file and each bad field.
    """
    # lazily: reading a profile or a trace needs no component registry
    from desim.engine.checks import check_components

    src = default_scenario_path() if path is None else Path(path)
    data = apply_overrides(resolve_paths(read_toml(src), src.parent), overrides)
    label = "default scenario" if path is None else str(src)
    scenario = validate_scenario(data, label)
    check_components(scenario, label)
    return scenario
