"""Result records: flat per-round, per-device-round and lost-work rows, and nothing else.

Rows are plain dataclasses collected during a run; :mod:`desim.results` turns them into
DataFrames at the end (STYLE §7) and adds the energy columns. Columns carry units.
``bandwidth_steps`` (a reclaiming uplink only) holds each device's bandwidth over time.
``planned_latency_s`` is the engine's evaluation of the chosen allocation under the round-start
snapshot (equal terms for every allocator); the allocator's own claim, if any, is kept
separately in ``allocator_estimate_s``. Wall-clock columns end in ``_wall_s`` and are the only
columns that differ between reruns with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 2
"""2: ``device_rounds`` gained ``task`` (a device may run several tasks in a round)."""
WALL_CLOCK_COLUMNS = ("solve_wall_s",)


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """One fine-tuning round."""

    round: int
    start_s: float
    end_s: float
    latency_s: float
    planned_latency_s: float
    allocator_estimate_s: float
    solve_wall_s: float
    active_devices: int
    available_devices: int
    bottleneck_device: str
    bottleneck_block: int
    min_memory_headroom_bytes: float
    status: str = "ok"
    reason: str = ""
    dropouts: int = 0
    reassigned_blocks: int = 0


@dataclass(frozen=True, slots=True)
class FaultEventRecord:
    """A task whose work was lost: which device, which block, when, why, and the time lost."""

    round: int
    device: str
    block: int
    kind: str
    time_s: float
    task_start_s: float
    lost_s: float


@dataclass(frozen=True, slots=True, eq=False)
class DeviceRounds:
    """The active devices of one round, one entry per block (columnar for speed).

    Every attribute is an ``(N,)`` array except ``round``; row ``i`` is the device training
    block ``block[i]`` in task ``task[i]`` (the round's tasks numbered in dispatch order: the
    rows of a set of blocks trained in one pass share a task, and a device given lost blocks
    later in the round runs another task).
    """

    round: int
    device: np.ndarray
    block: np.ndarray
    task: np.ndarray
    bandwidth_hz: np.ndarray
    compute_start_s: np.ndarray
    compute_end_s: np.ndarray
    upload_start_s: np.ndarray
    upload_end_s: np.ndarray
    upload_bits: np.ndarray
    mean_rate_bps: np.ndarray
    planned_compute_s: np.ndarray
    planned_upload_s: np.ndarray
    memory_bytes: np.ndarray
    memory_budget_bytes: np.ndarray
    outcome: np.ndarray
    # schemes and energy (README "Schemes, methods and energy"); None: derived at frame time
    # (no download; busy time = the phase's span; FLOPs, samples and tokens unknown)
    download_start_s: np.ndarray | None = None
    download_end_s: np.ndarray | None = None
    download_bits: np.ndarray | None = None
    compute_busy_s: np.ndarray | None = None
    upload_busy_s: np.ndarray | None = None
    download_busy_s: np.ndarray | None = None
    flops: np.ndarray | None = None
    samples: np.ndarray | None = None
    tokens: np.ndarray | None = None

    def filled(self, name: str) -> np.ndarray:
        """Column ``name``, with the frame-time default when it was not recorded."""
        value = getattr(self, name)
        if value is not None:
            return value  # type: ignore[no-any-return]
        n = len(self.block)
        if name in ("download_start_s", "download_end_s"):
            return self.upload_end_s
        if name in ("download_bits", "download_busy_s"):
            return np.zeros(n)
        if name == "compute_busy_s":
            return self.compute_end_s - self.compute_start_s
        if name == "upload_busy_s":
            return self.upload_end_s - self.upload_start_s
        return np.full(n, np.nan)


@dataclass(frozen=True, slots=True, eq=False)
class BandwidthSteps:
    """Each device's uplink bandwidth over one round on a reclaiming uplink (columnar).

    Every attribute is an ``(M,)`` array except ``round``, one entry per change: from
    ``time_s[i]`` device ``device[i]`` uploads at ``bandwidth_hz[i]`` (0: it stopped) until
    its next entry of the round. Entries are in time order.
    """

    round: int
    device: np.ndarray
    time_s: np.ndarray
    bandwidth_hz: np.ndarray
