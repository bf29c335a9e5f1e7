"""Assembly: turn a validated :class:`Scenario` into a ready :class:`Simulation`.

This is where scenario names become component instances (model config, cost model, channel,
compute timeline, allocator) and where the run's named random streams are handed out.
"""

from __future__ import annotations

import platform
from collections.abc import Hashable
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim import __version__
from desim.allocators import Allocator, make_allocator
from desim.costs.base import CostModel, Workload
from desim.costs.cache import shared_cost_model
from desim.costs.energy import merged_power
from desim.costs.fit import depth_decreases
from desim.costs.registry import CostInputs, ProfileReader
from desim.engine.checks import resolved_scenario
from desim.engine.csi import Csi
from desim.engine.faults import FaultModel
from desim.engine.records import SCHEMA_VERSION
from desim.engine.rng import rng_stream, rng_streams
from desim.engine.simulation import Simulation
from desim.errors import ScenarioError, warn
from desim.io.calibration import content_digest, load_profile_files, profile_fingerprint
from desim.io.hosts import host_info, priced_with
from desim.io.model_configs import load_model_config
from desim.io.shipped import default_scenario_path
from desim.io.traces import read_trace, resolve_trace_path
from desim.registry import validate_section
from desim.scenario.components import ChannelSpec, ComputeSpec, CostSpec
from desim.scenario.devices import DeviceSpec, DevicesSpec, resolve_devices
from desim.scenario.model import Scenario
from desim.schemes import SCHEMES, Scheme
from desim.world.channel import MAX_TX_POWER_DBM, Channel
from desim.world.channel_kinds import CHANNEL_KINDS, ChannelContext
from desim.world.compute import ComputeTimeline
from desim.world.compute_kinds import COMPUTE_KINDS, ComputeContext
from desim.world.kinds import section_params
from desim.world.traces import Trace


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
    """Versions recorded with every run (a fresh copy of :func:`_versions`)."""
    return dict(_versions())


@cache
def _versions() -> dict[str, str]:
    """The versions, read once per process."""
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
    """The channel a scenario's ``[channel]`` section describes (reads the trace file if any).

    The kind's builder (:data:`desim.world.channel_kinds.CHANNEL_KINDS`) gets its validated
    parameters; keys of other kinds were warned about where the scenario was loaded.
    """
    params = section_params(CHANNEL_KINDS, "channel", spec.kind, spec.params)
    ctx = ChannelContext(devices, noise_psd_dbm_per_hz, rng, _read_scenario_trace)
    return CHANNEL_KINDS.get_obj(spec.kind)(params, ctx)


def make_compute(
    devices: tuple[DeviceSpec, ...], spec: ComputeSpec, rng: np.random.Generator
) -> ComputeTimeline:
    """The compute timeline a scenario's ``[compute]`` section describes (as for the channel)."""
    params = section_params(COMPUTE_KINDS, "compute", spec.kind, spec.params)
    ctx = ComputeContext(tuple(d.name for d in devices), rng, _read_scenario_trace)
    return COMPUTE_KINDS.get_obj(spec.kind)(params, ctx)


def _read_scenario_trace(ref: str) -> Trace:
    """The trace a scenario names: ``shipped:NAME`` or a path (already absolute)."""
    trace: Trace = read_trace(resolve_trace_path(ref))
    return trace


def make_cost_model(
    spec: CostSpec, devices: tuple[DeviceSpec, ...], workload: Workload | None = None
) -> CostModel:
    """The cost model a scenario's ``[cost]`` section describes (reads the profiles).

    The model is the registered one (:data:`desim.costs.registry.COST_MODELS`) with its own
    validated parameters, shared by the runs of this process while the files it read are
    unchanged (:func:`desim.costs.cache.shared_cost_model`). With ``workload``, a profile file
    whose rows for it decrease with depth gets a warning naming the file, the column and the
    blocks (:func:`desim.costs.fit.depth_decreases`).
    """
    classes = tuple(sorted({d.hardware for d in devices}))
    inputs = CostInputs(classes, _profile_reader(workload))
    return shared_cost_model(spec.model, spec.params, inputs, workload, _fingerprint)


def _fingerprint(kind: str, ref: str) -> Hashable | None:
    """The content of what a cost model's reference names (:func:`shared_cost_model`)."""
    if kind == "profile":
        return profile_fingerprint(ref)
    try:
        return content_digest(Path(ref))
    except OSError:
        return None


def _profile_reader(workload: Workload | None) -> ProfileReader:
    """:func:`load_profile_files`, warning about depth decreases of ``workload``'s rows."""
    seen: set[Path] = set()

    def read(ref: str) -> list[tuple[Path, pd.DataFrame]]:
        parts = load_profile_files(ref)
        if workload is not None:
            _warn_depth_decreases(parts, workload, seen)
        return parts

    return read


def _warn_depth_decreases(
    parts: list[tuple[Path, pd.DataFrame]], workload: Workload, seen: set[Path]
) -> None:
    """Warn once per profile file (``seen``) and column whose workload rows decrease with depth.

    Shipped profiles are not warned about: their decreases are measured and documented in
    README "Calibration" (flan-t5-small full memory dips at the decoder/encoder boundary).
    """
    shipped = (default_scenario_path().parent / "profiles").resolve()
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
    clients = sp.params.get("clients")
    if sp.name in ("fl-lora", "dlora") and isinstance(clients, int):
        K = len(devices)
        if sp.name == "fl-lora":  # a client trains the whole model (the deepest block)
            need = float(sim.block_memory_bytes[-1])
            able = int((sim.memory_budget_bytes >= need).sum())
            who = (f"of the {K} devices can take part in fl-lora (memory_bytes holding the "
                   f"whole model's training step, {need:.4g} bytes)")
        else:
            able, who = K, "devices can take part in dlora (the scenario has that many)"
        if clients > able:
            warn(
                f"scheme.clients = {clients} exceeds the devices that can take part: only "
                f"{able} {who}; each round selects at most {able}"
            )


def make_scheme_of(scenario: Scenario, workload: Workload, allocator: Allocator) -> Scheme:
    """The scheme a scenario's ``[scheme]`` section describes, with its validated parameters."""
    entry = SCHEMES[scenario.scheme.name]
    params = validate_section(SCHEMES, entry.name, scenario.scheme.params, "scheme",
                              quiet=True)  # the loader has warned about foreign keys
    return entry.obj.build(params, scenario, workload, allocator)


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
        "scenario": resolved_scenario(scenario),
        "seed": scenario.run.seed,
        "versions": versions(),
    }
    allocator = make_allocator(scenario.allocator.name, scenario.allocator.params)
    scheme = make_scheme_of(scenario, workload, allocator)
    metadata["scheme"] = scenario.scheme.name
    csi = Csi(scenario.allocator.csi, scenario.allocator.csi_window_s)
    metadata["csi"] = csi.record
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
        csi=csi,
    )
    metadata["host"] = host_info()
    metadata["pricing"] = priced_with(sim.pricing, metadata["host"])
    warn_suspicious(scenario, devices, sim)
    return sim
