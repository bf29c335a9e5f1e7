"""The result of one run: its records, metadata and the tables written to disk.

:class:`RunResult` collects the rows of :mod:`desim.engine.records` during a run and turns them into
DataFrames at the end (STYLE §7). When a power model is set it adds the energy and efficiency
columns of :mod:`desim.costs.energy` there, so the records themselves stay plain data.
:func:`chrome_trace_events` views a result as a Chrome/Perfetto trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from desim.costs.energy import (
    DEVICE_ENERGY_COLUMNS,
    Columns,
    add_device_energy,
    round_metrics,
)
from desim.engine.records import (
    WALL_CLOCK_COLUMNS,
    BandwidthSteps,
    DeviceRounds,
    FaultEventRecord,
    RoundRecord,
)


def _record_columns(rows: list[Any], cls: type) -> dict[str, Any]:
    """The columns of records ``rows`` of dataclass ``cls`` (lists, as pandas infers them)."""
    return {f.name: [getattr(r, f.name) for r in rows] for f in fields(cls)}


def _frame(rows: list[Any], cls: type) -> pd.DataFrame:
    return pd.DataFrame(_record_columns(rows, cls))


def _batch_columns(batches: list[DeviceRounds]) -> Columns:
    """The per-device-round columns of ``batches``, with the frame-time defaults."""
    cols = [f.name for f in fields(DeviceRounds)]
    if not batches:  # float64, as pandas makes an empty list
        return {c: np.empty(0) for c in cols}
    return {
        "round": np.concatenate([np.full(len(b.block), b.round) for b in batches]),
        **{c: np.concatenate([b.filled(c) for b in batches]) for c in cols[1:]},
    }


@dataclass
class RunResult:
    """Everything one run produced, in memory (the engine writes no files).

    Attributes:
        rounds: one :class:`RoundRecord` per round.
        device_rounds: one :class:`DeviceRounds` batch per round.
        metadata: resolved scenario, seed, cost model used and versions (for ``run.json``).
        bandwidth_steps: one :class:`BandwidthSteps` batch per round on a reclaiming uplink
            (``None``: ``fixed``, no such table).
        oracle_bound_s: the ``oracle-exact`` bound of every round (``run.oracle_bound``;
            ``None``: not asked for, no such column).
    """

    rounds: list[RoundRecord] = field(default_factory=list)
    fault_events: list[FaultEventRecord] = field(default_factory=list)
    device_rounds: list[DeviceRounds] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    device_power: pd.DataFrame | None = None
    bandwidth_steps: list[BandwidthSteps] | None = None
    oracle_bound_s: list[float] | None = None

    def rounds_frame(self, device_rounds: pd.DataFrame | None = None) -> pd.DataFrame:
        """The rounds table (with energy and efficiency columns when a power model is set).

        ``device_rounds``: :meth:`device_rounds_frame`, when the caller already built it.
        """
        devices = None if device_rounds is None else {
            c: device_rounds[c].to_numpy() for c in device_rounds.columns}
        return pd.DataFrame(self._round_columns(devices))

    def _round_columns(self, devices: Columns | None = None) -> dict[str, Any]:
        """The rounds table's columns; ``devices``: :meth:`_device_columns`, if built."""
        rounds = _record_columns(self.rounds, RoundRecord)
        if self.oracle_bound_s is not None:  # run.oracle_bound
            rounds["oracle_bound_s"] = np.asarray(self.oracle_bound_s, dtype=float)
        if self.device_power is None:
            return rounds
        devices = self._device_columns() if devices is None else devices
        return round_metrics(rounds, devices, self.device_power)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The result tables as written to disk.

        ``rounds`` and ``device_rounds`` are pure functions of the scenario and seed (byte-
        identical on every rerun and backend); the wall-clock columns go to ``timing``. A run
        on a reclaiming uplink adds ``bandwidth_steps``. Each table is built from its columns
        in one go.
        """
        device_columns = self._device_columns()
        rounds = self._round_columns(device_columns)
        tables = {
            "rounds": pd.DataFrame({k: v for k, v in rounds.items()
                                    if k not in WALL_CLOCK_COLUMNS}),
            "device_rounds": pd.DataFrame(device_columns),
            "fault_events": self.fault_events_frame(),
            "timing": pd.DataFrame({k: rounds[k] for k in ("round", *WALL_CLOCK_COLUMNS)}),
        }
        if self.bandwidth_steps is not None:
            tables["bandwidth_steps"] = self.bandwidth_steps_frame()
        return tables

    def bandwidth_steps_frame(self) -> pd.DataFrame:
        """Each device's bandwidth over time (a reclaiming uplink; empty otherwise)."""
        cols = [f.name for f in fields(BandwidthSteps)]
        batches = self.bandwidth_steps or []
        if not batches:
            return pd.DataFrame({c: [] for c in cols})
        data = {
            "round": np.concatenate([np.full(len(b.device), b.round) for b in batches]),
            **{c: np.concatenate([getattr(b, c) for b in batches]) for c in cols[1:]},
        }
        return pd.DataFrame(data, columns=cols)

    def fault_events_frame(self) -> pd.DataFrame:
        """The lost-work events table (empty without faults)."""
        return _frame(self.fault_events, FaultEventRecord)

    def device_rounds_frame(self) -> pd.DataFrame:
        """The per-device-round table (with energy columns when a power model is set)."""
        return pd.DataFrame(self._device_columns())

    def _device_columns(self) -> Columns:
        """The per-device-round table's columns (with energy when a power model is set)."""
        columns = _batch_columns(self.device_rounds)
        if self.device_power is None:
            return columns
        if not self.device_rounds:
            return {**columns, **{c: np.empty(0) for c in DEVICE_ENERGY_COLUMNS}}
        rounds = _record_columns(self.rounds, RoundRecord)
        index = pd.Index(rounds["round"])
        first = ~index.duplicated()  # a round's first record gives its span
        span = pd.Series(np.subtract(rounds["end_s"], rounds["start_s"])[first],
                         index=index[first])
        return add_device_energy(columns, span.reindex(columns["round"]).to_numpy(float),
                                 self.device_power)


def chrome_trace_events(result: RunResult) -> list[dict[str, Any]]:
    """Chrome/Perfetto trace events of a run: one track per device plus a server track.

    Compute and upload phases become complete ("X") slices on their device's track and every
    round a slice on the server track, with instant markers at round starts. Each device's
    uplink bandwidth is a counter track (``bandwidth <device>``): the recorded steps on a
    reclaiming uplink, else its planned share from upload start to upload end. Times are in
    microseconds as the trace format requires.
    """
    us = 1e6
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "desim"}},
        {"ph": "M", "pid": 1, "tid": 0, "name": "thread_name", "args": {"name": "server"}},
    ]
    tids: dict[str, int] = {}
    for batch in result.device_rounds:
        for dev in batch.device.tolist():
            if dev not in tids:
                tids[dev] = len(tids) + 1
                events.append({"ph": "M", "pid": 1, "tid": tids[dev], "name": "thread_name",
                               "args": {"name": str(dev)}})
    for rec in result.rounds:
        events.append({"ph": "X", "pid": 1, "tid": 0, "name": f"round {rec.round}",
                       "ts": rec.start_s * us, "dur": rec.latency_s * us,
                       "args": {"planned_latency_s": rec.planned_latency_s}})
        events.append({"ph": "i", "pid": 1, "tid": 0, "s": "g", "name": f"round {rec.round} start",
                       "ts": rec.start_s * us})
    for b in result.device_rounds:
        for i, dev in enumerate(b.device.tolist()):
            tid, block = tids[dev], int(b.block[i])
            events.append({"ph": "X", "pid": 1, "tid": tid, "name": f"compute block {block}",
                           "ts": float(b.compute_start_s[i]) * us,
                           "dur": float(b.compute_end_s[i] - b.compute_start_s[i]) * us,
                           "args": {"round": b.round, "block": block}})
            events.append({"ph": "X", "pid": 1, "tid": tid, "name": f"upload block {block}",
                           "ts": float(b.upload_start_s[i]) * us,
                           "dur": float(b.upload_end_s[i] - b.upload_start_s[i]) * us,
                           "args": {"round": b.round, "bits": float(b.upload_bits[i]),
                                    "bandwidth_hz": float(b.bandwidth_hz[i])}})
    return events + _bandwidth_counters(result)


def _bandwidth_counters(result: RunResult) -> list[dict[str, Any]]:
    """Counter ("C") events of every device's bandwidth over time, in microseconds."""
    us = 1e6
    if result.bandwidth_steps is not None:
        steps = [(dev, t, bw) for b in result.bandwidth_steps
                 for dev, t, bw in zip(b.device.tolist(), b.time_s.tolist(),
                                       b.bandwidth_hz.tolist())]
    else:  # a fixed uplink: the planned share over the upload
        steps = [step for b in result.device_rounds
                 for dev, start, end, bw, bits in zip(
                     b.device.tolist(), b.upload_start_s.tolist(), b.upload_end_s.tolist(),
                     b.bandwidth_hz.tolist(), b.upload_bits.tolist())
                 if bits > 0 for step in ((dev, start, bw), (dev, end, 0.0))]
    return [{"ph": "C", "pid": 1, "name": f"bandwidth {dev}", "ts": t * us,
             "args": {"hz": bw}} for dev, t, bw in steps]
