"""The profiled cost model: costs from measured profiles, the default (README "Calibration").

:class:`ProfiledCostModel` prices a block through the fit of its hardware class's profile
(:mod:`desim.costs.fit`); a class or workload without profile rows falls back to the analytic
model (:mod:`desim.costs.analytic`) or is an error. The scenario's ``[cost]`` section gives its
parameters (:class:`ProfiledParams`): which profile prices each hardware class, at what relative
speed (:class:`BorrowedProfile`), and the fallback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from desim.costs.analytic import AnalyticCostModel, analytic_flops
from desim.costs.base import BlockCosts, CostModel, Workload
from desim.costs.cache import memoized
from desim.costs.fit import ProfileFit, fit_profile
from desim.costs.methods import METHODS, upload_bits
from desim.costs.multiblock import profiled_extras
from desim.costs.registry import COST_MODELS, CostInputs, CostParams
from desim.errors import ScenarioError, UnknownNameError
from desim.io.hosts import PROVENANCE_COLUMNS

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


#: fits by the content of the rows fitted: a sweep worker fits each table once
_FITS: dict[tuple[bytes, int], ProfileFit] = {}


def shared_fit(rows: pd.DataFrame, decoder_layers: int = 0) -> ProfileFit:
    """:func:`fit_profile` of ``rows``, cached by a hash of their columns and values."""
    h = hashlib.blake2b(digest_size=16)
    h.update("\0".join(map(str, rows.columns)).encode())
    h.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    key = (h.digest(), decoder_layers)
    fit = _FITS.get(key)
    if fit is None:
        fit = _FITS[key] = fit_profile(rows, decoder_layers)
        for value in vars(fit).values():  # shared by every run: nobody may change it
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
    return fit


def measured_on(rows: pd.DataFrame) -> dict[str, Any]:
    """Where and when ``rows`` were measured: each provenance column's value (a list if several).

    ``date`` gives the first and last measurement. Tables without a column leave it out.
    """
    out: dict[str, Any] = {}
    for col in PROVENANCE_COLUMNS:
        if col != "date" and col in rows:
            values = sorted({v.item() if hasattr(v, "item") else v for v in rows[col]})
            out[col] = values[0] if len(values) == 1 else values
    if "date" in rows and len(rows):
        out["date"] = {"first": str(rows["date"].min()), "last": str(rows["date"].max())}
    return out


@dataclass(frozen=True, eq=False)
class ProfiledCostModel:
    """Costs from measured profiles: the default cost model (README "Calibration").

    Each hardware class names a profile table (:func:`desim.io.calibration.load_profile`). For
    a workload the rows of its model and method are fitted once (:func:`fit_profile`) and the
    fit answers any batch and sequence length. Compute seconds are at speed factor 1; the
    engine divides by each device's speed factor and timeline factor. Upload bits follow the
    method's rule (:func:`upload_bits`) on the block's measured trainable values. FLOPs come
    from the table's ``flops`` column (torch's FLOP counter) when every row has one, else from
    :func:`analytic_flops` (``BlockCosts.flops_source`` says which). What a block adds to a
    set of blocks trained in one pass is derived from the same table
    (:func:`desim.costs.multiblock.profiled_extras`).

    Attributes:
        profiles: hardware class → profile table.
        fallback: prices classes or workloads without profile rows (``None``: raise instead);
            its ``source`` is recorded, so a run says which model priced it.
        class_speed: hardware class → how many times faster the class runs than its profile
            (a class priced by another class's measurements); absent classes: 1.
        pricing: hardware class → what its profile reference was and how it was resolved
            (``profile``, ``speed``, and a calibrated class file's ``calibration``), copied
            into each :attr:`BlockCosts.provenance`.
        roofline: hardware class → its ``(source, target)`` machines
            (:data:`desim.costs.roofline.MACHINES`) for a roofline transfer.
    """

    profiles: Mapping[str, pd.DataFrame]
    fallback: CostModel | None = None
    class_speed: Mapping[str, float] = field(default_factory=dict)
    pricing: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    roofline: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    name: str = "profiled"
    _fits: dict[tuple[str, str, str, int], ProfileFit] = field(
        default_factory=dict, init=False, repr=False
    )
    _costs: dict[tuple[Workload, str], BlockCosts] = field(
        default_factory=dict, init=False, repr=False
    )

    def fit(self, hardware: str, model: str, method: str,
            decoder_layers: int = 0) -> ProfileFit | None:
        """The fit for ``hardware``, ``model`` and ``method``, or ``None`` without rows.

        ``decoder_layers`` is the model's ``Ld`` (0 for encoder-only models).
        """
        key = (hardware, model, method, decoder_layers)
        if key not in self._fits:
            table = self.profiles[hardware]
            rows = table[(table["model"] == model) & (table["method"] == method)]
            if rows.empty:
                return None
            self._fits[key] = shared_fit(rows, decoder_layers)
        return self._fits[key]

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return ``(N,)`` compute seconds, peak bytes, upload bits and FLOPs of every block.

        Priced once per workload and class (:func:`desim.costs.cache.memoized`).

        Raises:
            UnknownNameError: no profile for ``hardware`` or the workload, and no fallback.
            ScenarioError: the workload's block split, LoRA rank, adapter width or target
                length differs from the profile's.
        """
        return memoized(self._costs, (workload, hardware), lambda: self._price(workload, hardware))

    def _price(self, workload: Workload, hardware: str) -> BlockCosts:
        """:meth:`block_costs`, computed."""
        cfg = workload.config
        fit = None
        if hardware in self.profiles:
            fit = self.fit(hardware, cfg.name, workload.method, cfg.num_decoder_layers)
        if fit is None:
            if self.fallback is not None:
                return self.fallback.block_costs(workload, hardware)
            if hardware not in self.profiles:
                raise UnknownNameError(
                    f"no profile for hardware class {hardware!r}; profiled classes: "
                    f"{', '.join(sorted(self.profiles))}"
                )
            table = self.profiles[hardware]
            have = sorted({f"{m}/{t}" for m, t in zip(table["model"], table["method"])})
            raise UnknownNameError(
                f"profile of {hardware!r} has no rows for {cfg.name}/{workload.method}; "
                f"it has: {', '.join(have)}"
            )
        self._check(fit, workload, hardware)
        table = self.profiles[hardware]
        rows = table[(table["model"] == cfg.name) & (table["method"] == workload.method)]
        n = np.arange(1, workload.num_blocks + 1)
        b, s = workload.batch_size, workload.seq_len
        flops = fit.flops(n, b, s)
        counted = analytic_flops(workload) if flops is None else flops
        compute_s = fit.compute_s(n, b, s)
        speed: float | np.ndarray = float(self.class_speed.get(hardware, 1.0))
        source = f"{self.name}:{hardware}"
        transfer = None
        if hardware in self.roofline:
            transfer = self._roofline_speed(hardware, workload, counted, compute_s)
            speed = speed * transfer.pop("speed_by_block")
            source = (f"{self.name}:{fit.hardware} profile, roofline /{np.min(speed):.3g}-"
                      f"{np.max(speed):.3g} for {hardware}")
        elif speed != 1.0:
            source = f"{self.name}:{fit.hardware} profile /{speed:g} for {hardware}"
        prov = self._provenance(hardware, workload, speed, rows)
        if transfer is not None:
            prov["transfer"] = transfer
        extra_s, extra_bytes = profiled_extras(workload, rows, compute_s, counted)
        return BlockCosts(
            compute_s=compute_s / speed,
            memory_bytes=fit.memory_bytes(n, b, s),
            upload_bits=upload_bits(workload.method, fit.trainable_params,
                                    workload.gradient_bits),
            source=source,
            flops=counted,
            flops_source="analytic" if flops is None else "profiled",
            provenance=prov,
            extra_compute_s=extra_s / speed,
            extra_memory_bytes=extra_bytes,
        )

    def _roofline_speed(self, hardware: str, workload: Workload, flops: np.ndarray,
                        compute_s: np.ndarray) -> dict[str, Any]:
        """Each block's roofline speed on ``hardware``'s target over its profile's source.

        The source's compute efficiency is fitted to the profile's times at the workload's
        batch and length (:func:`~desim.costs.roofline.fit_compute_efficiency`).

        Raises:
            ScenarioError: the method has no byte count, or the fitted efficiency exceeds 1
                (the source machine's peak is understated).
        """
        from dataclasses import replace

        from desim.costs.roofline import (
            MACHINES,
            fit_compute_efficiency,
            step_bytes_moved,
            transfer_speed,
        )

        src_name, tgt_name = self.roofline[hardware]
        src, tgt = MACHINES[src_name], MACHINES[tgt_name]
        eta = fit_compute_efficiency(flops, compute_s, src)
        if eta > 1:
            raise ScenarioError(
                f"cost.profiles.{hardware}: the profile runs at {eta:.2f}x machine {src_name}'s "
                "peak FLOP/s; its peak is understated, so a roofline transfer cannot use it"
            )
        bytes_moved = step_bytes_moved(workload)
        speed = transfer_speed(flops, bytes_moved, replace(src, compute_efficiency=eta), tgt)
        return {"kind": "roofline", "source": src_name, "target": tgt_name,
                "source_compute_efficiency": eta,
                "target_compute_efficiency": tgt.compute_efficiency,
                "target_memory_efficiency": tgt.memory_efficiency,
                "speed_min": float(speed.min()), "speed_max": float(speed.max()),
                "speed_by_block": speed}

    def _provenance(self, hardware: str, workload: Workload, speed: float | np.ndarray,
                    rows: pd.DataFrame) -> dict[str, Any]:
        """What priced ``workload`` on ``hardware``: the files with its rows, speed, hosts."""
        out = dict(self.pricing.get(hardware, {}))
        key = (workload.config.name, workload.method)
        files = out.pop("files", {})
        out["files"] = [f for f, workloads in files.items() if key in workloads]
        shown = speed if isinstance(speed, float) else [float(v) for v in speed]
        return {**out, "speed": shown, "measured": measured_on(rows)}

    @staticmethod
    def _check(fit: ProfileFit, workload: Workload, hardware: str) -> None:
        name = workload.config.name
        if workload.num_blocks != fit.num_blocks:
            raise ScenarioError(
                f"model.num_blocks: the {hardware!r} profile of {name} has one layer per "
                f"block ({fit.num_blocks} blocks), got {workload.num_blocks}; use "
                "cost.model = 'analytic' for other block splits"
            )
        if fit.lora_rank > 0 and workload.lora_rank != fit.lora_rank:
            raise ScenarioError(
                f"model.lora_rank: the {hardware!r} profile was measured at rank "
                f"{fit.lora_rank}, got {workload.lora_rank}"
            )
        rules = METHODS.get(workload.method)
        if rules is not None and rules.trains == "adapter":
            h = workload.config.hidden_size
            measured = (fit.trainable_params - h) / (2 * h + 1)  # S = 2ha + a + h per layer
            if not np.array_equal(measured, np.full(fit.num_blocks, workload.adapter_size)):
                raise ScenarioError(
                    f"model.adapter_size: the {hardware!r} profile of {name} was measured at "
                    f"adapter width {measured[0]:g}, got {workload.adapter_size}"
                )
        if fit.target_len > 0 and workload.target_len != fit.target_len:
            raise ScenarioError(
                f"model.target_len: the {hardware!r} profile of {name} was measured at "
                f"target length {fit.target_len}, got {workload.target_len}"
            )


class BorrowedProfile(BaseModel):
    """A hardware class priced by another class's profile, ``speed`` times faster.

    For classes nobody has measured (docs: Calibration): the class's compute seconds are the
    profile's divided by ``speed``; memory, bits and FLOPs are the profile's. Device speed
    factors of the class stay relative to the class itself.

    With ``transfer = "roofline"`` the speed of each block is derived instead
    (:mod:`desim.costs.roofline`, docs: Transfer between hardware): the profile's measured
    times give the ``source`` machine's compute efficiency, and each block's counted FLOPs and
    bytes give its roofline time on ``source`` and on ``target``; ``speed`` then multiplies
    the derived speed (leave it at 1).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)

    profile: Annotated[str, Field(min_length=1)] = Field(
        description="A shipped hardware-class name, or a path to a profile CSV or a folder of them."
    )
    speed: PositiveFloat = Field(
        default=1.0, description="The class runs this many times faster than the profile."
    )
    transfer: Literal["speed", "roofline"] = Field(
        default="speed",
        description="`speed`: the given factor; `roofline`: derived from FLOPs, bytes and the "
        "machines' peaks (docs: Transfer between hardware).",
    )
    source: str | None = Field(
        default=None, description="Roofline: the machine the profile was measured on "
        "(default: the profile's hardware class).")
    target: str | None = Field(
        default=None, description="Roofline: the machine of this class (default: the class).")


class ProfiledParams(CostParams):
    """Parameters of the ``profiled`` cost model.

    ``profiles`` maps each hardware class to a profile: a shipped hardware-class name
    (``cpu-reference``) or a path to a profile CSV or a folder of them, or
    ``{ profile = ..., speed = ... }`` to price an unmeasured class by another class's profile
    at a relative speed. A class or workload without profile rows is priced by the analytic
    model at ``analytic_flops_per_s`` when ``fallback = "analytic"`` and is an error when
    ``fallback = "none"``; results record which model priced each class (``cost_model`` in
    run.json).
    """

    profiles: dict[Annotated[str, Field(min_length=1)], BorrowedProfile] = Field(
        default_factory=lambda: {"cpu-reference": BorrowedProfile(profile="cpu-reference")},
        description="Hardware class → profile: a name or path, or `{ profile, speed }`.",
    )
    fallback: Literal["analytic", "none"] = Field(
        default="analytic",
        description=(
            "Classes or workloads without a profile: `analytic` prices them, `none` is an error."
        ),
    )
    analytic_flops_per_s: PositiveFloat = Field(
        default=5e10, description="Sustained training throughput of the analytic model."
    )

    @field_validator("profiles", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        # a plain string names the class's own profile (speed 1)
        if isinstance(value, dict):
            return {k: {"profile": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("profiles")
    @classmethod
    def _known_machines(cls, value: dict[str, BorrowedProfile]) -> dict[str, BorrowedProfile]:
        from desim.costs.roofline import MACHINES

        for h, ref in value.items():
            if ref.transfer != "roofline":
                continue
            for role, name in (("source", ref.source or ref.profile), ("target", ref.target or h)):
                if name not in MACHINES:
                    raise ValueError(
                        f"{h}.{role}: no roofline machine {name!r}; known: "
                        f"{', '.join(sorted(MACHINES))} (set {role} = one of them)"
                    )
        return value

    def references(self) -> tuple[str, ...]:
        """The profile of every class (a shipped name or a path)."""
        return tuple(ref.profile for ref in self.profiles.values())


@COST_MODELS.register("profiled", "measured profiles, fitted in depth, batch and sequence length",
                      ProfiledParams)
def build_profiled(params: ProfiledParams, inputs: CostInputs) -> ProfiledCostModel:
    """Read every class's profile; the analytic fallback knows the device and profile classes.

    A reference to a calibrated class file (``.toml``, written by ``desim profile
    --calibrate``) borrows the file's profile at its speed, times the entry's own ``speed``.
    """
    refs = dict(params.profiles)
    pricing: dict[str, dict[str, Any]] = {}
    for h, r in params.profiles.items():
        pricing[h] = {"profile": r.profile}
        if r.profile.endswith(".toml"):
            cal = inputs.read_class(r.profile)
            refs[h] = r.model_copy(update={"profile": cal.profile, "speed": r.speed * cal.speed})
            pricing[h].update(profile=cal.profile, calibration={
                "file": r.profile, "speed": cal.speed, "speed_ci95": list(cal.speed_ci95),
                "host": dict(cal.host), "measured": dict(cal.measured),
            })
    classes = sorted(set(inputs.classes) | set(refs))
    speed = {h: refs[h].speed if h in refs else 1.0 for h in classes}
    analytic = AnalyticCostModel(
        flops_per_s=params.analytic_flops_per_s, hardware_speed=tuple(speed.items())
    )
    files = {h: inputs.read_profile(r.profile) for h, r in refs.items()}
    for h, parts in files.items():  # each file with the workloads it has rows of
        pricing[h]["files"] = {str(f): set(zip(t["model"], t["method"])) for f, t in parts}
    profiles = {
        h: parts[0][1] if len(parts) == 1 else pd.concat([t for _, t in parts], ignore_index=True)
        for h, parts in files.items()
    }
    return ProfiledCostModel(
        profiles,
        fallback=analytic if params.fallback == "analytic" else None,
        class_speed={h: r.speed for h, r in refs.items() if r.speed != 1.0},
        pricing=pricing,
        roofline={h: (r.source or r.profile, r.target or h) for h, r in refs.items()
                  if r.transfer == "roofline"},
    )
