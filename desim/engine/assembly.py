"""Assembly: turn a validated :class:`Scenario` into a ready :class:`Simulation`.

This is where scenario names become component instances (model config, cost model, channel,
compute timeline, allocator) and where the run's named random streams are handed out.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim import __version__
from desim.allocators import make_allocator
from desim.costs.energy import merged_power
from desim.costs.models import (
    AnalyticCostModel,
    CostModel,
    ProfiledCostModel,
    Workload,
    depth_decreases,
    method_rules,
)
from desim.engine.faults import FaultModel
from desim.engine.records import SCHEMA_VERSION
from desim.engine.rng import rng_stream, rng_streams
from desim.engine.simulation import Simulation
from desim.errors import InputError, ScenarioError, warn
from desim.io.files import (
    default_scenario_path,
    load_model_config,
    load_profile_files,
    read_kr_scores,
    read_trace,
    resolve_kr_scores_path,
    resolve_trace_path,
)
from desim.scenario.model import (
    ChannelSpec,
    ComputeSpec,
    CostSpec,
    DeviceSpec,
    DevicesSpec,
    Scenario,
    resolve_devices,
)
from desim.schemes.core import KillRevive, Scheme, make_scheme
from desim.world.channel import MAX_TX_POWER_DBM, Channel, generated_channel, trace_channel
from desim.world.compute import (
    ComputeTimeline,
    ComputeTimelineParams,
    SignalTimeline,
    generate_compute,
    trace_timeline,
)
from desim.world.traces import TraceMeta, tidy_frame, trace_from_frame


def workload_of(scenario: Scenario) -> Workload:
    """The workload a scenario trains."""
    m = scenario.model
    return Workload(
        config=load_model_config(m.name),
        method=m.method,
        batch_size=m.batch_size,
        seq_len=m.seq_len,
        num_blocks=m.num_blocks,
        lora_rank=m.lora_rank,
        gradient_bits=m.gradient_bits,
        target_len=m.target_len,
        adapter_size=m.adapter_size,
    )


def versions() -> dict[str, str]:
    """Versions recorded with every run."""
    import pandas
    import scipy

    return {
        "desim": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        # read from the installed metadata: simpy itself is imported by the engine alone
        "simpy": version("simpy"),
    }


def devices_of(scenario: Scenario) -> tuple[DeviceSpec, ...]:
    """The devices a scenario runs: its list, or its population drawn for ``run.seed``.

    An unpinned population draws from the run's ``population`` stream, which no other
    section shares, so the allocator or the channel never changes it.
    """
    return resolve_devices(scenario.devices, rng_stream(scenario.run.seed, "population"))


def make_channel(
    devices: tuple[DeviceSpec, ...],
    spec: ChannelSpec,
    noise_psd_dbm_per_hz: float,
    rng: np.random.Generator,
) -> Channel:
    """The channel a scenario's ``[channel]`` section describes (reads the trace file if any)."""
    if spec.kind == "trace":
        trace = read_trace(resolve_trace_path(spec.path or ""))
        return trace_channel(trace, devices, spec, noise_psd_dbm_per_hz, rng)
    return generated_channel(devices, spec, noise_psd_dbm_per_hz, rng)


def make_compute(
    devices: tuple[DeviceSpec, ...], spec: ComputeSpec, rng: np.random.Generator
) -> ComputeTimeline:
    """The compute timeline a scenario's ``[compute]`` section describes."""
    names = tuple(d.name for d in devices)
    if spec.kind == "constant":
        return SignalTimeline.constant(len(devices))
    if spec.kind == "trace":
        trace = read_trace(resolve_trace_path(spec.path or ""))
    else:
        params = ComputeTimelineParams(
            **{f: getattr(spec, f) for f in ComputeTimelineParams.__dataclass_fields__}
        )
        series = generate_compute(params, len(devices), rng)
        frame = tidy_frame(
            names,
            [s[0] for s in series],
            {"speed_factor": [s[1] for s in series], "available": [s[2] for s in series]},
        )
        meta = TraceMeta(end_policy="loop", duration_s=spec.duration_s)
        trace = trace_from_frame(frame, "generated compute timeline", meta)
        spec = spec.model_copy(update={"mapping": "cyclic"})
    return trace_timeline(trace, names, spec, rng)


def make_cost_model(
    spec: CostSpec, devices: tuple[DeviceSpec, ...], workload: Workload | None = None
) -> CostModel:
    """The cost model a scenario's ``[cost]`` section describes (reads the profiles).

    With ``workload``, a profile file whose rows for it decrease with depth gets a warning
    naming the file, the column and the blocks (:func:`desim.costs.models.depth_decreases`).
    """
    classes = sorted({d.hardware for d in devices} | set(spec.profiles))
    refs = spec.profiles
    speed = {h: refs[h].speed if h in refs else 1.0 for h in classes}
    analytic = AnalyticCostModel(
        flops_per_s=spec.analytic_flops_per_s,
        hardware_speed=tuple(speed.items()),
    )
    if spec.model == "analytic":
        return analytic
    files = {h: load_profile_files(r.profile) for h, r in refs.items()}
    profiles = {
        h: parts[0][1] if len(parts) == 1 else pd.concat([t for _, t in parts], ignore_index=True)
        for h, parts in files.items()
    }
    if workload is not None:
        _warn_depth_decreases(files, workload)
    return ProfiledCostModel(
        profiles,
        fallback=analytic if spec.fallback == "analytic" else None,
        class_speed={h: r.speed for h, r in refs.items() if r.speed != 1.0},
    )


def _warn_depth_decreases(
    files: dict[str, list[tuple[Path, pd.DataFrame]]], workload: Workload
) -> None:
    """Warn once per profile file and column whose workload rows decrease with depth.

    Shipped profiles are not warned about: their decreases are measured and documented in
    README "Calibration" (flan-t5-small full memory dips at the decoder/encoder boundary).
    """
    shipped = (default_scenario_path().parent / "profiles").resolve()
    seen: set[Path] = set()
    for parts in files.values():
        for path, table in parts:
            if path in seen or path.resolve().is_relative_to(shipped):
                continue
            seen.add(path)
            rows = table[(table["model"] == workload.config.name)
                         & (table["method"] == workload.method)]
            for d in depth_decreases(rows):
                warn(
                    f"{path}: column {d.column} decreases with depth at block(s) "
                    f"{', '.join(map(str, d.blocks))} ({d.example}); the fitted profile is "
                    "non-decreasing in depth and hides it"
                )


def check_tx_power(spec: DevicesSpec, devices: tuple[DeviceSpec, ...]) -> None:
    """Refuse a transmit power above :data:`desim.world.channel.MAX_TX_POWER_DBM`.

    Raises:
        ScenarioError: naming ``devices.population.tx_power_dbm`` or
            ``devices.list.<i>.tx_power_dbm`` (as scenario validation names list items), the
            device and the value.
    """
    for i, d in enumerate(devices):
        if not d.tx_power_dbm <= MAX_TX_POWER_DBM:
            key = (f"devices.list.{i}.tx_power_dbm" if spec.list is not None
                   else "devices.population.tx_power_dbm")
            raise ScenarioError(
                f"{key}: {d.tx_power_dbm:g} dBm (device {d.name}) is above the "
                f"{MAX_TX_POWER_DBM:g} dBm desim accepts (10 MW; a 3GPP UE transmits 23 dBm, "
                "a macro base station 46 dBm)"
            )


def warn_suspicious(scenario: Scenario, devices: tuple[DeviceSpec, ...], sim: Simulation) -> None:
    """Warn about valid but suspicious keys: ignored, unused, or asking for the impossible."""
    run = scenario.run
    if run.deadline_s is not None and run.straggler_policy == "wait-all":
        warn(
            f"run.deadline_s = {run.deadline_s:g} is ignored under run.straggler_policy = "
            "'wait-all' (only straggler_policy = 'deadline' abandons late blocks)"
        )
    classes = sorted({d.hardware for d in devices})
    for name in sorted(set(scenario.power) - set(classes)):
        warn(
            f"power.{name}: no device has hardware class {name!r}, so this power entry is "
            f"unused (hardware classes in use: {', '.join(classes)})"
        )
    sp = scenario.scheme
    if sp.name in ("fl-lora", "dlora") and sp.clients is not None:
        K = len(devices)
        if sp.name == "fl-lora":  # a client trains the whole model (the deepest block)
            need = float(sim.block_memory_bytes[-1])
            able = int((sim.memory_budget_bytes >= need).sum())
            who = (f"of the {K} devices can take part in fl-lora (memory_bytes holding the "
                   f"whole model's training step, {need:.4g} bytes)")
        else:
            able, who = K, "devices can take part in dlora (the scenario has that many)"
        if sp.clients > able:
            warn(
                f"scheme.clients = {sp.clients} exceeds the devices that can take part: only "
                f"{able} {who}; each round selects at most {able}"
            )


def kr_scores_of(scenario: Scenario) -> tuple[tuple[float, ...], ...] | None:
    """DLoRA's Kill-and-Revive score rows: inline, or read from the named score file.

    Raises:
        InputError: an unreadable file, or rows whose length is not the model's ``2L`` modules.
    """
    ref = scenario.scheme.kr_scores
    if ref is None:
        return None
    where = "scheme.kr_scores"
    rows: np.ndarray | tuple[tuple[float, ...], ...]
    if isinstance(ref, str):
        rows = read_kr_scores(resolve_kr_scores_path(ref))
        where = f"scheme.kr_scores ({ref})"
    else:
        rows = ref
    modules = 2 * workload_of(scenario).config.num_layers
    bad = [len(r) for r in rows if len(r) != modules]
    if bad:
        raise InputError(
            f"{where}: {scenario.model.name} has {modules} LoRA modules (q and v of every "
            f"layer), but a score row has {bad[0]}"
        )
    return tuple(tuple(float(v) for v in r) for r in rows)


def make_scheme_of(scenario: Scenario) -> Scheme | None:
    """The scheme a scenario's ``[scheme]`` section describes (``None``: allocator-planned)."""
    sp = scenario.scheme
    common: dict[str, Any] = {
        "local_steps": sp.local_steps,
        "selection": sp.selection,
        "clients": sp.clients,
        "downlink_rate_bps": sp.downlink_rate_bps,
    }
    if sp.name == "fl-lora":
        return make_scheme("fl-lora", common)
    if sp.name == "dlora":
        rules = method_rules(scenario.model.method)
        if rules.trains != "lora" or not rules.backward:
            raise ScenarioError(
                f"model.method: dlora splits the LoRA modules off the frozen backbone and "
                f"trains them by backpropagation; use lora, lora-checkpoint or qlora, got "
                f"{scenario.model.method!r}"
            )
        kr = (
            KillRevive(sp.kr_threshold, sp.kr_patience, sp.kr_revive_period, sp.kr_min_active)
            if sp.kill_revive
            else None
        )
        return make_scheme("dlora", {
            **common, "server_speed_factor": sp.server_speed_factor,
            "activation_bits": sp.activation_bits, "kill_revive": kr, "score": sp.kr_score,
            "score_sigma": sp.kr_score_sigma, "scores": kr_scores_of(scenario),
        })
    return None


def build_simulation(scenario: Scenario) -> Simulation:
    """Build the simulation a scenario describes.

    The population draws from the run's ``population`` stream (unless pinned), the channel
    (fading, or a trace's random offsets) from ``channel``, the compute timeline from
    ``compute``, the faults from ``faults`` and the allocator from ``allocator``, so changing
    the allocator never changes the devices or the channel realisation.
    """
    devices = devices_of(scenario)
    streams = rng_streams(scenario.run.seed)
    check_tx_power(scenario.devices, devices)
    channel = make_channel(
        devices, scenario.channel, scenario.server.noise_psd_dbm_per_hz, streams["channel"]
    )
    compute = make_compute(devices, scenario.compute, streams["compute"])
    workload = workload_of(scenario)
    cost = make_cost_model(scenario.cost, devices, workload)
    metadata: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario.model_dump(mode="json"),
        "seed": scenario.run.seed,
        "versions": versions(),
    }
    allocator = make_allocator(scenario.allocator.name, scenario.allocator.params)
    scheme = make_scheme_of(scenario)
    if scenario.scheme.name == "offload":  # the offload scheme is the offload allocator
        allocator = make_allocator(
            "offload", {"server_speed_factor": scenario.scheme.server_speed_factor}
        )
    metadata["scheme"] = scenario.scheme.name
    sim = Simulation(
        devices=devices,
        workload=workload,
        server=scenario.server,
        cost_model=cost,
        channel=channel,
        compute=compute,
        allocator=allocator,
        scheme=scheme,
        power=merged_power(scenario.power),
        rounds=scenario.run.rounds,
        seed=scenario.run.seed,
        metadata=metadata,
        policy=scenario.run,
        faults=FaultModel(
            scenario.faults, {d.name: i for i, d in enumerate(devices)}, streams["faults"]
        ),
    )
    warn_suspicious(scenario, devices, sim)
    return sim
