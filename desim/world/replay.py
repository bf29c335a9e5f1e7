"""Replaying a trace for scenario devices: device mapping, time offsets and end policies.

Each scenario device replays one trace device (:func:`map_devices`: ``cyclic``,
``random-offset`` or a table), from a time offset, and after the trace device's own end the trace
loops or holds (:func:`replay_signals`). Devices of different lengths each loop on their own
length, inside a shared period (:func:`shared_period_s`), so none is stretched to the longest.

:func:`replay_rows` replays from the trace's own rows and picks the layout: one grid shared by
every signal (:func:`replay_signals`, the union of the breakpoints) while that grid is small, and
each signal on its own trace device's grid (:class:`~desim.world.ragged.RaggedSignals`) when
the shared one would hold more than :data:`DENSE_MAX_CELLS` cells, as it does for a large trace
whose devices are sampled at different times: it would need every device's timestamps in
every row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BeforeValidator, Field, field_validator

from desim.errors import TraceError, warn
from desim.registry import Params
from desim.world.piecewise import EndPolicy, PiecewiseSignals
from desim.world.ragged import RaggedSignals
from desim.world.traces import Trace

SHARED_PERIODS = 8
"""Devices of different lengths looping together repeat every ``n`` times the longest length,
``n <= SHARED_PERIODS`` (see :func:`shared_period_s`)."""
MAPPINGS = ("cyclic", "random-offset")
DENSE_MAX_CELLS = 1 << 24
"""Largest shared grid :func:`replay_rows` builds, in signals × breakpoints (128 MiB of
``float64``): every shipped trace replays on one grid for thousands of devices; past it each
signal keeps its own trace device's grid."""


def _known_mapping(value: Any) -> Any:
    """One clear message for a mapping that is neither a known name nor a table of names."""
    if value in MAPPINGS or (
        isinstance(value, dict) and all(isinstance(v, str) for v in [*value, *value.values()])
    ):
        return value
    raise ValueError(
        "must be 'cyclic', 'random-offset' or a table of scenario device = trace device"
    )


TraceMapping = Annotated[
    Literal["cyclic", "random-offset"] | dict[str, str], BeforeValidator(_known_mapping)
]
"""A scenario's ``mapping``: ``cyclic``, ``random-offset`` or a table of trace devices."""


def grid_step_s(trace: Trace) -> float | None:
    """The sampling step of a trace sampled on one uniform grid up to its end, else ``None``.

    ``random-offset`` draws whole steps on such a trace, so the shifted signals share the
    trace's grid: the engine's cost grows with the union of every device's breakpoints, and
    offsets off the grid would multiply it by the number of devices.
    """
    if not trace.same_length or trace.times_s.size < 2:
        return None
    steps = np.diff(np.append(trace.times_s, trace.end_s))
    return float(steps[0]) if np.allclose(steps, steps[0], rtol=1e-9, atol=0.0) else None


def map_devices(
    trace: Trace,
    names: tuple[str, ...],
    mapping: str | Mapping[str, str],
    rng: np.random.Generator | None,
    section: str = "channel",
) -> tuple[np.ndarray, np.ndarray]:
    """Assign a trace device and a time offset to every scenario device.

    Args:
        trace: the trace.
        names: scenario device names ``(K,)``.
        mapping: ``cyclic`` (scenario device ``i`` replays trace device ``i mod M``),
            ``random-offset`` (the same, each starting at a uniform random time within its
            trace device's own length, drawn from ``rng``), or a table
            ``{scenario device: trace device}``.
        rng: the run's stream for this section (``channel`` or ``compute``).
        section: scenario section name for messages.

    Returns:
        ``(rows (K,), offsets_s (K,))``.
    """
    k = len(names)
    m = len(trace.devices)
    if isinstance(mapping, str):
        rows = np.arange(k) % m
        if mapping == "cyclic":
            if m == 1 and k > 1:
                warn(
                    f"{section}.path ({trace.source}) holds one trace device and "
                    f"{section}.mapping = 'cyclic' replays it for every scenario device: all {k} "
                    f"devices get the same signal (mapping = 'random-offset' starts each at "
                    "its own time)"
                )
            return rows, np.zeros(k)
        if mapping == "random-offset":
            if rng is None:
                raise ValueError("random-offset mapping needs a random generator")
            step = grid_step_s(trace)
            if step is not None:  # whole steps: every device keeps the trace's own time grid
                return rows, step * rng.integers(0, round(trace.end_s / step), k)
            if trace.same_length:
                return rows, rng.uniform(0.0, trace.end_s, k)
            return rows, rng.uniform(0.0, trace.ends_s[rows])
        raise TraceError(
            f"{section}.mapping: unknown mapping {mapping!r}; known: cyclic, random-offset, "
            "or a table of scenario device = trace device"
        )
    missing = [n for n in names if n not in mapping]
    if missing:
        raise TraceError(
            f"{section}.mapping: no trace device for scenario device(s) {', '.join(missing[:5])}"
        )
    extra = sorted(set(mapping) - set(names))
    if extra:
        raise TraceError(f"{section}.mapping: unknown scenario device(s) {', '.join(extra[:5])}")
    return np.array([trace.row_of(mapping[n]) for n in names]), np.zeros(k)


def replay_signals(
    trace: Trace,
    values: np.ndarray,
    rows: np.ndarray,
    offsets_s: np.ndarray,
    end_policy: EndPolicy | None = None,
    trace_rows: np.ndarray | None = None,
) -> PiecewiseSignals:
    """Signals ``v_k(t) = values[rows[k]](t + offsets_s[k])`` on their union grid.

    Every signal loops (or holds) on the own length of the trace device it replays. When those
    lengths differ, the signals share the period :func:`shared_period_s`: inside it each one
    repeats exactly on its own length.

    Args:
        trace: the trace (grid, device lengths and default end policy).
        values: values on ``trace.times_s``, one row per trace device ``(M, T)``, or one row
            per output signal already mapped to trace devices ``(K, T)``.
        rows: row of ``values`` per output signal ``(K,)``.
        offsets_s: time offset per output signal ``(K,)``, within its device's length.
        end_policy: override of the trace's end policy.
        trace_rows: trace device of each output signal ``(K,)``, whose length it loops on;
            default ``rows mod M``, which is right for values per trace device and for values
            mapped with the ``cyclic`` or ``random-offset`` mapping (output ``k`` replays trace
            device ``k mod M``).

    Returns:
        ``K`` signals; a shifted ``loop`` row wraps around within its own length, a shifted
        ``hold`` row reaches its held last value ``offset`` seconds early.
    """
    policy = end_policy or trace.end_policy
    if policy == "loop" and not trace.same_length:
        devs = np.asarray(rows) % len(trace.devices) if trace_rows is None else trace_rows
        lengths = trace.ends_s[np.asarray(devs)]
        if np.any(lengths != trace.end_s):
            return _replay_own_loops(trace, values, np.asarray(rows), offsets_s, lengths)
    # one shared period; under hold a shorter device's last value already holds on the grid
    end = trace.end_s
    times = trace.times_s
    offs = np.mod(np.asarray(offsets_s, dtype=float), end)
    if not np.any(offs):
        return PiecewiseSignals(times, values[np.asarray(rows)], end, policy)
    grid = _shifted_grid(trace, offs, policy)
    # evaluate at segment midpoints so float rounding at a breakpoint cannot pick a neighbour
    mid = (grid + np.append(grid[1:], end)) / 2.0
    out = np.empty((len(rows), grid.size))
    for i, (r, o) in enumerate(zip(rows, offs)):
        local = mid + o
        local = np.mod(local, end) if policy == "loop" else np.minimum(local, np.nextafter(end, 0))
        seg = np.searchsorted(times, local, side="right") - 1
        out[i] = values[r][seg]
    return PiecewiseSignals(grid, out, end, policy)


def _shifted_grid(trace: Trace, offsets_s: np.ndarray, policy: EndPolicy) -> np.ndarray:
    """The union grid ``(G,)`` of the trace's grid shifted by every offset, within one period."""
    times, end = trace.times_s, trace.end_s
    step = grid_step_s(trace)
    if policy == "loop" and step is not None and _whole_steps(offsets_s, step):
        return times  # a uniform grid shifted by whole steps is itself (exactly, not in floats)
    parts = [np.zeros(1)]
    for o in np.unique(offsets_s):
        shifted = times - o
        parts.append(np.mod(shifted, end) if policy == "loop" else shifted[shifted > 0])
    grid = np.unique(np.concatenate(parts))
    return grid[grid < end]


def _whole_steps(offsets_s: np.ndarray, step_s: float) -> bool:
    n = offsets_s / step_s
    return bool(np.all(np.abs(n - np.round(n)) <= 1e-9 * np.maximum(n, 1.0)))


def shared_period_s(lengths_s: np.ndarray, max_periods: int = SHARED_PERIODS) -> float:
    """The period of signals that loop on different lengths ``(K,)``.

    The smallest multiple ``n L_max`` (``n <= max_periods``) of the longest length that is a
    whole number of every length, where one exists, so the loops are exact forever; else
    ``max_periods L_max``. Then every signal repeats exactly on its own length up to that
    period and all restart together there: a shorter signal's last repetition is cut short,
    which weighs at most ``L_k / (max_periods L_max)`` in any long-run statistic.
    """
    longest = float(np.max(lengths_s))
    for n in range(1, max_periods + 1):
        ratio = n * longest / np.asarray(lengths_s, dtype=float)
        if np.all(np.abs(ratio - np.round(ratio)) <= 1e-9 * ratio):
            return n * longest
    return max_periods * longest


def _replay_own_loops(
    trace: Trace,
    values: np.ndarray,
    rows: np.ndarray,
    offsets_s: np.ndarray,
    lengths_s: np.ndarray,
) -> PiecewiseSignals:
    """Looping signals of different own lengths ``lengths_s`` ``(K,)`` on one shared period."""
    times = trace.times_s
    period = shared_period_s(lengths_s)
    offs = np.mod(np.asarray(offsets_s, dtype=float), lengths_s)
    parts = [np.zeros(1)]
    for r, o, length in zip(rows, offs, lengths_s):
        # only the row's own change points, so the grid grows with the rows, not with M
        own = times < length
        v = values[r][own]
        change = times[own][np.append(True, v[1:] != v[:-1])]
        starts = np.mod(change - o, length)
        copies = np.arange(int(np.ceil(period / length)) + 1) * length
        parts.append((starts[None, :] + copies[:, None]).ravel())
    grid = np.unique(np.concatenate(parts))
    grid = grid[grid < period]
    mid = (grid + np.append(grid[1:], period)) / 2.0
    out = np.empty((len(rows), grid.size))
    for i, (r, o, length) in enumerate(zip(rows, offs, lengths_s)):
        seg = np.searchsorted(times, np.mod(mid + o, length), side="right") - 1
        out[i] = values[r][seg]
    return PiecewiseSignals(grid, out, period, "loop")


def replay_rows(
    trace: Trace,
    flat: np.ndarray,
    rows: np.ndarray,
    offsets_s: np.ndarray,
    end_policy: EndPolicy | None = None,
    scale: np.ndarray | None = None,
) -> PiecewiseSignals | RaggedSignals:
    """Signals ``v_k(t) = scale_k · flat_{rows[k]}(t + offsets_s[k])`` from the trace's rows.

    While the shared grid is small (:func:`dense_cells` at most :data:`DENSE_MAX_CELLS`) this
    is exactly :func:`replay_signals` on the union grid; past it each signal keeps its own
    trace device's grid and loops (or holds) on its own length forever.

    Args:
        trace: the trace.
        flat: a value per trace row ``(N,)`` (aligned with ``trace.row_times_s``).
        rows: trace device of each output signal ``(K,)``.
        offsets_s: time offset of each output signal ``(K,)``.
        end_policy: override of the trace's end policy.
        scale: factor of each output signal ``(K,)`` (``None``: 1).
    """
    rows = np.asarray(rows, dtype=np.intp)
    policy = end_policy or trace.end_policy
    if dense_cells(trace, rows, offsets_s, policy) <= DENSE_MAX_CELLS:
        values = trace.on_grid(flat, rows)
        if scale is not None:
            values = values * np.asarray(scale, dtype=float)[:, None]
        return replay_signals(trace, values, np.arange(rows.size), offsets_s, policy, rows)
    groups: dict[tuple[int, float], list[int]] = {}
    for k, (r, o) in enumerate(zip(rows.tolist(), np.asarray(offsets_s, float).tolist())):
        length = float(trace.ends_s[r]) if policy == "loop" else trace.end_s
        groups.setdefault((r, float(np.mod(o, length))), []).append(k)
    bundles, group_of, row_in = [], np.empty(rows.size, np.intp), np.zeros(rows.size, np.intp)
    for g, ((r, o), members) in enumerate(groups.items()):
        times, base, end = _own_grid(trace, flat, r, o, policy)
        ks = np.array(members)
        if scale is None:
            values = base[None, :]
        else:
            values = np.asarray(scale, dtype=float)[ks][:, None] * base[None, :]
            row_in[ks] = np.arange(ks.size)
        bundles.append(PiecewiseSignals(times, values, end, policy))
        group_of[ks] = g
    return RaggedSignals(tuple(bundles), group_of, row_in)


def dense_cells(trace: Trace, rows: np.ndarray, offsets_s: np.ndarray, policy: EndPolicy) -> float:
    """An upper bound on the cells ``K × G`` of the shared grid :func:`replay_signals` builds.

    The union grid of the trace has at most its rows plus ``t = 0`` (one device's rows on a
    shared grid); offsets off the grid shift a copy of it per offset; devices looping on
    different lengths add their change points once per repetition in the shared period.
    """
    k = rows.size
    grid = float(trace.samples[0] if trace.shared_grid else trace.samples.sum()) + 1.0
    lengths = trace.ends_s[rows]
    if policy == "loop" and not trace.same_length and np.any(lengths != trace.end_s):
        period = shared_period_s(lengths)
        return k * float(np.sum((trace.samples[rows] + 1.0) * (np.ceil(period / lengths) + 2)))
    offs = np.mod(np.asarray(offsets_s, dtype=float), trace.end_s)
    if np.any(offs) and not (policy == "loop" and _on_uniform_grid(trace, offs)):
        grid *= np.unique(offs).size + 1
    return k * grid


def _on_uniform_grid(trace: Trace, offsets_s: np.ndarray) -> bool:
    if not trace.shared_grid:
        return False  # the union grid is not built just to look
    step = grid_step_s(trace)
    return step is not None and _whole_steps(offsets_s, step)


def _own_grid(
    trace: Trace, flat: np.ndarray, r: int, o: float, policy: EndPolicy
) -> tuple[np.ndarray, np.ndarray, float]:
    """Trace device ``r``'s own signal from offset ``o``: ``(times (T,), values (T,), end_s)``."""
    lo, hi = int(trace.row_start[r]), int(trace.row_start[r + 1])
    tau, v = trace.row_times_s[lo:hi], flat[lo:hi]
    if tau[0] != 0.0:  # the first value holds back to t = 0
        tau = np.concatenate([[0.0], tau[1:]])
    length = float(trace.ends_s[r])
    if o == 0.0:
        return tau, v, length
    j = int(np.searchsorted(tau, o, side="right")) - 1  # the segment holding the offset
    if policy == "loop":  # rotate: [o, L) then the wrapped [0, o)
        times = np.concatenate([[0.0], tau[j + 1 :] - o, tau[: j + 1] + (length - o)])
        vals = np.concatenate([v[j:], v[: j + 1]])
        keep = times < length  # the wrapped start of segment j is L when o is on a breakpoint
        times, vals, end = times[keep], vals[keep], length
    else:
        times, vals = np.concatenate([[0.0], tau[j + 1 :] - o]), v[j:]
        end = length - o if length - o > times[-1] else float(times[-1]) + 1.0
    # float rounding can make neighbouring starts equal: the earlier piece has no width
    last = np.append(times[1:] > times[:-1], True)
    return times[last], vals[last], end


class TraceReplayParams(Params):
    """The keys of every ``trace`` kind: the file, how devices replay it, what follows its end.

    ``[channel]`` and ``[compute]`` replay traces alike; each kind's model adds its own keys and
    names its trace in :attr:`what` (for the message when ``path`` is missing).
    """

    what: ClassVar[str] = "trace"

    path: str = Field(
        default=None,  # refused by _needs_path: the key is required
        validate_default=True,
        description="Trace file: `shipped:NAME` or a path (relative to the scenario file).",
    )
    mapping: TraceMapping = Field(
        default="cyclic",
        description=(
            "Trace device of each scenario device: `cyclic` (device i replays trace device "
            "i mod M from t = 0), `random-offset` (the same, from a time drawn from the run's "
            "`channel` or `compute` stream: the built-in channel's choice, so seeds are real "
            "replicates) or a table."
        ),
    )
    end_policy: Literal["loop", "hold"] | None = Field(
        default=None, description="After the trace ends: `loop` or `hold`; unset: the file's own."
    )

    @field_validator("path", mode="before")
    @classmethod
    def _needs_path(cls, path: Any) -> Any:
        if path is None or path == "":
            raise ValueError(
                f"kind = 'trace' needs a tidy {cls.what} file (shipped:NAME or a path)"
            )
        return path
