"""Cost models shared by the runs of one process (a sweep worker), keyed by content.

Building a cost model reads and fits profiles, and pricing a workload on a hardware class
fits and composes per-block costs: tens of milliseconds that every run of a sweep would repeat
on the same files. :func:`shared_cost_model` builds a model once per ``[cost]`` section,
hardware classes and workload, records every file reference the build read with a content
fingerprint of it, and reuses the model only while every fingerprint still matches (an edited
profile CSV, a new file in a profile folder or an edited class file builds afresh; the
:data:`MAX_MODELS` most recently used are kept). The profiled model prices each workload and
class once (:func:`memoized`: read-only arrays, a fresh copy of the provenance). The warnings
the build gave are given again on every reuse, so a run warns as an unshared build would.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from desim.costs.base import BlockCosts, CostModel
from desim.costs.registry import CostInputs, build_cost_model

Fingerprint = Callable[[str, str], Hashable | None]
"""``(kind, reference)`` to a content fingerprint of what it names (``kind``: ``profile`` or
``class``); ``None`` when it cannot be read, which never matches."""


def memoized(memo: dict[Any, BlockCosts], key: Hashable,
             price: Callable[[], BlockCosts]) -> BlockCosts:
    """``price()`` once per ``key``: its arrays read-only, the provenance a fresh copy each call."""
    costs = memo.get(key)
    if costs is None:
        costs = memo[key] = price()
        for value in vars(costs).values():  # shared by every run: nobody may change it
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
    return replace(costs, provenance=copy.deepcopy(costs.provenance))


@dataclass(frozen=True)
class _Entry:
    model: CostModel
    reads: tuple[tuple[str, str, Hashable], ...]
    warned: tuple[tuple[str, type[Warning]], ...]


#: built models by (model name, parameters, hardware classes, workload), least recent first
_MODELS: dict[tuple[str, str, tuple[str, ...], Hashable], _Entry] = {}
MAX_MODELS = 16
"""Most models kept (each holds its profile tables): a sweep over many workloads stays small."""


def shared_cost_model(
    name: str,
    params: Mapping[str, Any] | None,
    inputs: CostInputs,
    workload: Hashable,
    fingerprint: Fingerprint,
) -> CostModel:
    """:func:`~desim.costs.registry.build_cost_model`, reused while its files are unchanged.

    Args:
        name: the ``cost.model`` name.
        params: the section's other keys.
        inputs: the hardware classes and the readers the build uses.
        workload: what else the build depends on (its warnings name the workload's rows).
        fingerprint: the content fingerprint of a reference the build reads.
    """
    key = (name, json.dumps(params or {}, sort_keys=True, default=repr), inputs.classes, workload)
    entry = _MODELS.pop(key, None)
    if entry is None or any(fp is None or fingerprint(kind, ref) != fp
                            for kind, ref, fp in entry.reads):
        entry = _build(name, params, inputs, fingerprint)
    _MODELS[key] = entry  # the most recent last
    while len(_MODELS) > MAX_MODELS:
        del _MODELS[next(iter(_MODELS))]
    for message, category in entry.warned:
        warnings.warn(message, category, stacklevel=2)
    return entry.model


def _build(name: str, params: Mapping[str, Any] | None, inputs: CostInputs,
           fingerprint: Fingerprint) -> _Entry:
    """Build the model, recording each reference read (fingerprinted first) and each warning."""
    reads: list[tuple[str, str, Hashable]] = []

    def recorded(kind: str, read: Callable[[str], Any]) -> Callable[[str], Any]:
        def reader(ref: str) -> Any:
            reads.append((kind, ref, fingerprint(kind, ref)))
            return read(ref)

        return reader

    recording = CostInputs(inputs.classes, recorded("profile", inputs.read_profile),
                           recorded("class", inputs.read_class))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_cost_model(name, params, recording)
    warned = tuple((str(w.message), w.category) for w in caught)
    # a reference that could not be fingerprinted never matches: the next run builds afresh
    return _Entry(model, tuple(reads), warned)
