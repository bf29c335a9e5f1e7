"""Sweep specs and their expansion into resolved runs, each named by a content-hash run key.

A sweep spec (TOML, see ``experiments/README.md``) names a base scenario, fixed overrides
(``[set]``), grid axes (``[grid]``: the product of every listed value), zipped axes (``[zip]``:
lists of equal length that vary together), allocators and replicate seeds. Every run is a fully
resolved :class:`~desim.scenario.model.Scenario`; its **run key** is a content hash of that
scenario (allocator, parameters and seed included), of the files it reads and of the desim
version. A sweep holds at most :data:`MAX_RUNS` runs (:func:`run_count` counts a spec without
resolving it, :func:`iter_runs` resolves it lazily); :mod:`desim.experiments.sweep` runs them.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from desim import __version__
from desim.costs.registry import cost_params
from desim.engine.checks import check_components, resolved_scenario
from desim.errors import InputError
from desim.io.scenario import apply_overrides, read_toml, resolve_override, resolve_paths
from desim.io.shipped import SHIPPED_PREFIX, default_scenario_path
from desim.io.traces import trace_sidecar
from desim.scenario.base import format_validation_error
from desim.scenario.components import AllocatorSpec
from desim.scenario.model import Scenario, validate_scenario

MAX_RUNS = 100_000
"""Most runs one sweep may hold (a resolved run costs a few kB of memory and about 1 ms)."""

_FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class AllocatorEntry(BaseModel):
    """One allocator of a sweep: registered ``name``, optional ``label``; other keys are params."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)
    name: str
    label: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The allocator parameters (every key except ``name`` and ``label``)."""
        return dict(self.model_extra or {})

    @property
    def display(self) -> str:
        """The label used in tables and legends."""
        return self.label or self.name


class SweepSpec(BaseModel):
    """A validated sweep spec (see the module docstring for the semantics)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)  # as the scenario
    name: str = Field(min_length=1)
    description: str = ""
    base: str = "default"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    allocators: list[AllocatorEntry] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        # the name becomes results/sweeps/<name>: it must not point outside that folder
        if not _FOLDER_NAME.fullmatch(value) or ".." in value:
            raise ValueError(
                "expected a folder name of letters, digits, '_', '-' and '.' (not starting "
                "with '.', no '..', no path separator)"
            )
        return value

    @model_validator(mode="after")
    def _axes(self) -> SweepSpec:
        for key, values in {**self.grid, **self.zip}.items():
            if not values:
                raise ValueError(f"axis {key!r} is empty")
        lengths = {len(v) for v in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip axes must have equal lengths, got {sorted(lengths)}")
        both = set(self.grid) & set(self.zip)
        if both:
            raise ValueError(f"axes listed in both grid and zip: {sorted(both)}")
        if any(s < 0 for s in self.seeds):
            raise ValueError("seeds must be non-negative")
        labels = [a.display for a in self.allocators]
        if len(set(labels)) != len(labels):
            raise ValueError(f"allocator labels must be unique, got {labels}")
        return self

    @property
    def axis_keys(self) -> list[str]:
        """Dotted keys of every axis, grid first."""
        return list(self.grid) + list(self.zip)


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its position, axis values, allocator label and resolved scenario."""

    index: int
    key: str
    axes: dict[str, Any]
    allocator: str
    seed: int
    scenario: Scenario


def load_sweep_spec(path: str | Path) -> tuple[SweepSpec, Path]:
    """Read and validate a sweep spec; returns the spec and its directory (for relative bases)."""
    p = Path(path)
    data = read_toml(p)
    try:
        return SweepSpec.model_validate(data), p.parent
    except ValidationError as exc:
        raise InputError(f"{p}: {format_validation_error(exc, model=SweepSpec)}") from None


def run_key(scenario: Scenario) -> str:
    """Content hash of a resolved scenario, the files it reads, and the desim version.

    The scenario is hashed resolved (:func:`desim.engine.checks.resolved_scenario`: every
    component's defaults filled in), so equal runs get equal keys however their keys were
    written. Files named by path are hashed by content and stand in the hashed scenario by
    their digest, not their path: editing a trace gives new keys, while the same files reached
    by another path (scenario paths are made absolute,
    :func:`desim.io.scenario.resolve_paths`) give the same key, so a moved checkout resumes
    its sweeps. Shipped files change only with the desim version. 16 hex digits.
    """
    digests = {str(p): _file_digest(p) for p in referenced_files(scenario)}
    blob = json.dumps(
        {
            "scenario": _by_content(resolved_scenario(scenario), digests),
            "files": sorted(digests.values()),
            "desim": __version__,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _by_content(node: Any, digests: Mapping[str, str]) -> Any:
    """``node`` with every string that names a hashed file replaced by that file's digest."""
    if isinstance(node, dict):
        return {k: _by_content(v, digests) for k, v in node.items()}
    if isinstance(node, list):
        return [_by_content(v, digests) for v in node]
    if isinstance(node, str) and node in digests:
        return f"sha256:{digests[node]}"
    return node


def referenced_files(scenario: Scenario) -> list[Path]:
    """Existing user files a scenario reads, not shipped names.

    Channel and compute traces with their JSON sidecars, cost profiles (a CSV or a folder),
    the Kill-and-Revive score file and a model config JSON (``model.name = "path.json"``).
    """
    traces = [scenario.channel.path, scenario.compute.path]
    refs = [
        *traces,
        *cost_params(scenario.cost.model, scenario.cost.params).references(),
        kr if isinstance(kr := scenario.scheme.params.get("kr_scores"), str) else None,
        scenario.model.name if scenario.model.name.endswith(".json") else None,
    ]
    paths = [Path(r) for r in refs if r and not r.startswith(SHIPPED_PREFIX)]
    paths += [trace_sidecar(Path(t)) for t in traces if t and not t.startswith(SHIPPED_PREFIX)]
    return sorted({p for p in paths if p.exists()})


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _digest(path_text: str, mtime_ns: int, size: int) -> str:
    """Content hash, cached per (path, mtime, size): a sweep hashes each file once."""
    path = Path(path_text)
    h = hashlib.sha256()
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def _axis_points(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    grid_keys = list(spec.grid)
    zip_rows = list(zip(*spec.zip.values(), strict=True)) if spec.zip else [()]
    for combo in itertools.product(*spec.grid.values()):
        for row in zip_rows:
            yield {
                **dict(zip(grid_keys, combo, strict=True)),
                **dict(zip(spec.zip, row, strict=True)),
            }


def run_count(spec: SweepSpec) -> int:
    """Number of runs of a sweep, without resolving one (grid × zip × allocators × seeds)."""
    grid = math.prod(len(values) for values in spec.grid.values())
    zipped = len(next(iter(spec.zip.values()))) if spec.zip else 1
    return grid * zipped * len(spec.allocators) * len(spec.seeds)


#: the key naming each section's component, for :func:`varied_components`
SELECTORS = {"scheme.name": "scheme", "cost.model": "cost", "channel.kind": "channel",
             "compute.kind": "compute"}


def varied_components(spec: SweepSpec) -> dict[str, set[str]]:
    """Per section, the component names a sweep's grid or zip varies over.

    A spec that grids ``scheme.name`` over ``deft`` and ``dlora`` and sets ``scheme.kr_score``
    for DLoRA means it: that key is not worth a warning in the ``deft`` runs.
    """
    out: dict[str, set[str]] = {}
    for key, values in [*spec.grid.items(), *spec.zip.items()]:
        if key in SELECTORS:
            out.setdefault(SELECTORS[key], set()).update(str(v) for v in values)
    return out


PLANNER_KEYS = tuple(k for k in AllocatorSpec.model_fields if k != "name")
"""Keys of ``[allocator]`` that are not an allocator's parameters (``csi``, ``csi_window_s``)."""


def iter_runs(spec: SweepSpec, spec_dir: Path = Path(".")) -> Iterator[Run]:
    """Resolve the runs of a sweep one at a time, in :func:`expand`'s order (no count limit).

    Raises:
        InputError: naming the run's axis values and the bad field when a combination is invalid.
    """
    base_path = default_scenario_path() if spec.base == "default" else spec_dir / spec.base
    # paths in the base resolve from the base's folder, paths in the spec from the spec's
    base = resolve_paths(read_toml(base_path), base_path.parent)
    fixed = [(k, resolve_override(k, v, spec_dir)) for k, v in spec.set.items()]
    expected = varied_components(spec)
    index = 0
    for point in _axis_points(spec):
        moved = [(k, resolve_override(k, v, spec_dir)) for k, v in point.items()]
        for alloc in spec.allocators:
            for seed in spec.seeds:
                overrides = fixed + moved
                data = apply_overrides(base, overrides)
                # the planner's channel knowledge (allocator.csi*) may be set or swept
                # beside the allocators; an allocator entry's own keys win
                known = {k: v for k, v in data.get("allocator", {}).items() if k in PLANNER_KEYS}
                data["allocator"] = {**known, "name": alloc.name, **alloc.params}
                data.setdefault("run", {})["seed"] = seed
                where = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "base"
                label = f"sweep {spec.name!r} run ({where}, allocator {alloc.display}, seed {seed})"
                scenario = validate_scenario(data, label)
                check_components(scenario, label, expected)
                yield Run(index, run_key(scenario), point, alloc.display, seed, scenario)
                index += 1


def expand(spec: SweepSpec, spec_dir: Path = Path("."), *, limit: int = MAX_RUNS) -> list[Run]:
    """Resolve every run of a sweep (order: axes, then allocators, then seeds).

    Args:
        spec: the validated spec.
        spec_dir: directory that a relative ``base`` is read from.
        limit: most runs allowed (:data:`MAX_RUNS`); counted before anything is resolved.

    Raises:
        InputError: the sweep has more than ``limit`` runs (the message gives both counts), or
            naming the run's axis values and the bad field when a combination is invalid.
    """
    count = run_count(spec)
    if count > limit:
        raise InputError(
            f"sweep {spec.name!r}: {count:,} runs exceed the limit of {limit:,} runs per sweep; "
            "split the grid over several specs (--dry-run lists it without running)"
        )
    runs = list(iter_runs(spec, spec_dir))
    keys = [r.key for r in runs]
    if len(set(keys)) != len(keys):
        raise InputError(f"sweep {spec.name!r}: two runs resolve to the same scenario")
    return runs
