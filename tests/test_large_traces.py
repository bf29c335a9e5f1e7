"""Large traces: the typed reader, each device's own rows, and the replay on per-device grids.

The typed (pyarrow) reader must give exactly the text reader's trace, and fall back to it for
any file it does not read cleanly; a replay too large for one shared grid keeps every device on
its own grid (:class:`~desim.world.ragged.RaggedSignals`), which must be the same signals as the
shared grid, up to the float rounding of segments summed in pieces there.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import desim.world.replay as replay
from desim.engine.assembly import build_simulation
from desim.io.scenario import load_scenario
from desim.io.trace_columns import read_columns
from desim.io.traces import _read_trace, _read_trace_frame, read_trace, write_trace
from desim.scenario.devices import DeviceSpec
from desim.world.channel import SignalChannel
from desim.world.channel_trace import trace_channel
from desim.world.piecewise import PiecewiseSignals
from desim.world.ragged import RaggedSignals
from desim.world.tidy import tidy_frame
from desim.world.traces import TraceMeta

ROOT = Path(__file__).parents[1]
DEVICES = tuple(DeviceSpec(name=f"s{i}", tx_power_dbm=20.0 + i) for i in range(6))


def offset_trace_frame(devices=4, rows=40, step_s=0.5, seed=0, quantity="throughput_mbps"):
    """Devices sampled every ``step_s`` from their own offsets: no timestamp is shared."""
    rng = np.random.default_rng(seed)
    names = [f"dev{k}" for k in range(devices)]
    times = [k * step_s / devices + 0.01 + step_s * np.arange(rows) for k in range(devices)]
    if quantity == "gain_db":
        vals = [np.round(rng.normal(-95.0, 6.0, rows), 2) for _ in names]
    else:
        vals = [np.round(rng.exponential(3.0, rows) * (rng.random(rows) > 0.1), 3)
                for _ in names]
    return tidy_frame(names, times, {quantity: vals})


def meta(end_policy="loop", rows=40, step_s=0.5, lengths=None, quantity="throughput_mbps"):
    own = None if lengths is None else {f"dev{k}": v for k, v in enumerate(lengths)}
    ref = None if quantity == "gain_db" else 5e6
    return TraceMeta(end_policy=end_policy, duration_s=rows * step_s + step_s,
                     device_duration_s=own, ref_bandwidth_hz=ref)


def assert_same_trace(a, b):
    assert a.devices == b.devices and a.quantity == b.quantity and a.meta == b.meta
    assert a.end_s == b.end_s
    for x, y in [(a.row_start, b.row_start), (a.row_times_s, b.row_times_s),
                 (a.samples, b.samples), (a.median_step_s, b.median_step_s),
                 (a.device_end_s, b.device_end_s), (a.times_s, b.times_s)]:
        assert x.tobytes() == y.tobytes()
    assert a.row_columns.keys() == b.row_columns.keys()
    for col in a.row_columns:
        assert a.row_columns[col].tobytes() == b.row_columns[col].tobytes()
        assert a.columns[col].tobytes() == b.columns[col].tobytes()


# --- the typed reader -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("interleave", [False, True])
def test_the_typed_reader_gives_the_text_readers_trace(tmp_path, suffix, interleave):
    frame = offset_trace_frame()
    if interleave:  # rows sorted by time across devices, not grouped by device
        frame = frame.sort_values("time_s", kind="stable").reset_index(drop=True)
    path = write_trace(frame, meta(lengths=[20.5, 20.2, 20.5, 20.0]), tmp_path / f"t{suffix}")
    assert read_columns(path) is not None  # the typed reader read it
    assert_same_trace(_read_trace(path), _read_trace_frame(path))
    assert read_trace(path).samples.tolist() == [40, 40, 40, 40]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_time_out_of_order_is_named_at_its_line_by_the_typed_reader(tmp_path, suffix):
    frame = offset_trace_frame(devices=2, rows=5)
    frame.loc[7, "time_s"] = 0.1  # dev1's third row goes back in time
    path = write_trace(frame, meta(rows=5), tmp_path / f"t{suffix}")
    assert read_columns(path) is not None
    with pytest.raises(Exception) as fast:
        _read_trace(path)
    with pytest.raises(Exception) as text:
        _read_trace_frame(path)
    assert str(fast.value) == str(text.value)
    # CSV: 3 metadata comments and the header come first; Parquet counts rows from 1
    where = "line 12" if suffix == ".csv" else "row 8"
    assert f"{where}: time_s 0.1 is not after the previous time" in str(fast.value)


def test_a_file_the_typed_reader_refuses_is_read_as_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("device,time_s,throughput_mbps,ref_bandwidth_hz\n"
                    "a,0,1,5e6\na, 1,2,5e6\n b,0,nan,5e6\n")
    assert read_columns(path) is None  # " 1" and "nan": not clean typed cells
    with pytest.raises(Exception, match=r"t.csv line 4: throughput_mbps is NaN"):
        read_trace(path)
    path.write_text("device,time_s,throughput_mbps,ref_bandwidth_hz\na,0,1,5e6\na, 1,2,5e6\n")
    assert read_trace(path).row_times_s.tolist() == [0.0, 1.0]  # the text reader accepts it


def test_reading_keeps_each_devices_rows_and_builds_no_grid(tmp_path):
    path = write_trace(offset_trace_frame(), meta(), tmp_path / "t.parquet")
    trace = read_trace(path)
    assert trace.row_times_s.size == 160 and not trace.shared_grid
    assert "_columns" not in trace.__dict__ and "_times_s" not in trace.__dict__
    assert not trace.row_times_s.flags.writeable


# --- the replay on per-device grids -----------------------------------------------------------


def channels(trace, monkeypatch, mapping, end_policy=None, seed=3):
    """The channel on one shared grid and the one on per-device grids, from the same draws."""
    shared = trace_channel(trace, DEVICES, -174.0, np.random.default_rng(seed), mapping,
                           end_policy)
    with monkeypatch.context() as m:
        m.setattr(replay, "DENSE_MAX_CELLS", 0)
        ragged = trace_channel(trace, DEVICES, -174.0, np.random.default_rng(seed), mapping,
                               end_policy)
    assert isinstance(shared.signals, PiecewiseSignals)
    assert isinstance(ragged, SignalChannel) and isinstance(ragged.signals, RaggedSignals)
    return shared, ragged


@pytest.mark.parametrize("quantity", ["throughput_mbps", "gain_db"])
@pytest.mark.parametrize("mapping", ["cyclic", "random-offset"])
@pytest.mark.parametrize("policy", ["loop", "hold"])
@pytest.mark.parametrize("lengths", [None, [20.5, 20.2, 20.5, 20.0]])
def test_per_device_grids_replay_the_shared_grids_signals(
    tmp_path, monkeypatch, quantity, mapping, policy, lengths
):
    frame = offset_trace_frame(quantity=quantity)
    path = write_trace(frame, meta(policy, lengths=lengths, quantity=quantity),
                       tmp_path / "t.parquet")
    trace = read_trace(path)
    shared, ragged = channels(trace, monkeypatch, mapping)
    horizon = shared.signals.end_s  # the shared grid's period (or its end under hold)
    rng = np.random.default_rng(1)
    for t in rng.uniform(0.0, 2.5 * trace.end_s if policy == "hold" else horizon, 300):
        assert np.array_equal(shared.snr_coef_hz(t), ragged.snr_coef_hz(t))
    devs = np.arange(60) % len(DEVICES)
    starts = rng.uniform(0.0, horizon / 2, 60)
    bits = rng.uniform(1e5, 4e7, 60)
    bw = rng.uniform(2e5, 5e6, 60)
    np.testing.assert_allclose(ragged.transfer_end_s(devs, starts, bits, bw),
                               shared.transfer_end_s(devs, starts, bits, bw), rtol=1e-12)
    ends = starts + rng.uniform(0.0, 30.0, 60)
    np.testing.assert_allclose(ragged.signals.integrate_between(devs, starts, ends),
                               shared.signals.integrate_between(devs, starts, ends), rtol=1e-12)
    np.testing.assert_allclose(ragged.signals.integrate_until(devs, starts, bits / 1e3),
                               shared.signals.integrate_until(devs, starts, bits / 1e3),
                               rtol=1e-12)
    assert np.array_equal(ragged.signals.row_min, shared.signals.row_min)


def test_per_device_grids_hold_only_each_devices_own_rows(tmp_path, monkeypatch):
    trace = read_trace(write_trace(offset_trace_frame(), meta(), tmp_path / "t.parquet"))
    monkeypatch.setattr(replay, "DENSE_MAX_CELLS", 0)
    signals = trace_channel(trace, DEVICES, -174.0, None).signals
    # 6 scenario devices replay 4 trace devices from t = 0: 4 grids of 40 rows, no union;
    # a throughput is the same for every device replaying it, so they share one row
    assert len(signals.groups) == 4 and signals.num_rows == 6
    assert [g.values.shape for g in signals.groups] == [(1, 40)] * 4
    assert signals.group_of.tolist() == [0, 1, 2, 3, 0, 1]
    assert "_columns" not in trace.__dict__ and "_times_s" not in trace.__dict__


def test_each_device_loops_on_its_own_length_forever(tmp_path, monkeypatch):
    lengths = [20.5, 20.2, 20.5, 20.0]  # no common multiple within 8 periods
    trace = read_trace(write_trace(offset_trace_frame(), meta(lengths=lengths),
                                   tmp_path / "t.parquet"))
    _, ragged = channels(trace, monkeypatch, "cyclic")
    for t in (3.3, 7.9, 15.05):
        now = ragged.snr_coef_hz(t)
        later = [ragged.snr_coef_hz(t + 1000 * lengths[k % 4])[k] for k in range(6)]
        assert now.tolist() == later  # past the shared grid's 8 x 20.5 s period too


def test_segments_are_padded_with_empty_pieces(tmp_path, monkeypatch):
    trace = read_trace(write_trace(offset_trace_frame(), meta(), tmp_path / "t.parquet"))
    shared, ragged = channels(trace, monkeypatch, "random-offset")
    rows = np.arange(6)
    dur, vals = ragged.signals.segments_between(rows, np.full(6, 1.0), np.full(6, 4.0))
    assert dur.shape == vals.shape and np.allclose(dur.sum(axis=1), 3.0, rtol=1e-12)
    d2, v2 = shared.signals.segments_between(rows, np.full(6, 1.0), np.full(6, 4.0))
    np.testing.assert_allclose((dur * vals).sum(axis=1), (d2 * v2).sum(axis=1), rtol=1e-12)
    assert isinstance(ragged.signals, RaggedSignals) and ragged.signals.num_rows == 6


@pytest.mark.parametrize("csi", ["snapshot", "large-scale", "ergodic", "predicted", "oracle"])
def test_a_run_on_per_device_grids_matches_the_shared_grid(tmp_path, monkeypatch, csi):
    path = write_trace(offset_trace_frame(devices=5, rows=200, step_s=0.1, quantity="gain_db"),
                       meta(rows=200, step_s=0.1, quantity="gain_db"), tmp_path / "t.parquet")
    over = ["run.rounds=3", "devices.population.count=14", f'channel.path="{path}"',
            'channel.mapping="random-offset"', f'allocator.csi="{csi}"']
    shared = build_simulation(load_scenario(None, over))
    with monkeypatch.context() as m:
        m.setattr(replay, "DENSE_MAX_CELLS", 0)
        ragged = build_simulation(load_scenario(None, over))
    assert isinstance(ragged.channel.signals, RaggedSignals)
    a = shared.run().tables()["device_rounds"]
    b = ragged.run().tables()["device_rounds"]
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for col in a.columns:
        if a[col].dtype.kind == "f":
            np.testing.assert_allclose(b[col], a[col], rtol=1e-9, equal_nan=True)
        else:
            assert a[col].tolist() == b[col].tolist()


# --- the benchmark's trace --------------------------------------------------------------------


def test_the_big_trace_script_writes_the_same_trace_in_both_formats(tmp_path):
    script = ROOT / "experiments" / "perf" / "make_big_trace.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--devices", "3",
                    "--rows", "500"], check=True, capture_output=True)
    parquet, csv = read_trace(tmp_path / "big.parquet"), read_trace(tmp_path / "big.csv")
    assert_same_trace(parquet, csv)
    assert parquet.samples.tolist() == [500, 500, 500]
    assert parquet.times_s.size == 3 * 500  # every device has its own timestamps (and t = 0)
    scenario = load_scenario(tmp_path / "big-parquet.toml", ["run.rounds=1"])
    assert scenario.channel.kind == "trace"
