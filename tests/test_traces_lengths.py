"""Traces of different lengths stay themselves: converted, summarised, replayed, shipped.

Each device keeps its own length: it loops (or holds) on it, never stretched to the longest
file. The real Norway HSDPA files are used when ../shared/traces-external is present.
"""

import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest

from desim.cli.main import main
from desim.engine.assembly import build_simulation
from desim.errors import DesimWarning, TraceError
from desim.experiments.sweep_spec import expand, load_sweep_spec
from desim.io.shipped import shipped_traces
from desim.io.traces import convert_trace, read_trace, resolve_trace_path
from desim.scenario.devices import DeviceSpec
from desim.world.channel_trace import trace_channel
from desim.world.replay import map_devices, replay_signals, shared_period_s
from desim.world.tidy import tidy_frame, trace_from_frame
from desim.world.trace_import import ImportOptions
from desim.world.traces import TraceMeta, summarise

ROOT = Path(__file__).parents[1]
EXTERNAL = ROOT.parent / "shared" / "traces-external"
NORWAY = EXTERNAL / "norway-hsdpa"
needs_norway = pytest.mark.skipif(not NORWAY.is_dir(), reason="no ../shared/traces-external")
SHIPPED = "norway-hsdpa-6dev.csv"

# pensieve format, 1 s steps: "long" is 4 Mbit/s for 2 s then 2 for 2 s (length 4 s, mean 3);
# "short" is 1 then 3 Mbit/s (length 2 s, mean 2)
LONG = "0 4\n1 4\n2 2\n3 2\n"
SHORT = "0 1\n1 3\n"


def pensieve_pair(tmp_path: Path) -> list[Path]:
    (tmp_path / "long").write_text(LONG)
    (tmp_path / "short").write_text(SHORT)
    return [tmp_path / "long", tmp_path / "short"]


def quiet_convert(inputs, out, opts=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DesimWarning)
        return convert_trace("pensieve", inputs, out, opts or ImportOptions())


def time_mean(signals, row):
    widths = np.diff(np.append(signals.times_s, signals.end_s))
    return float(np.sum(signals.values[row] * widths) / signals.end_s)


# --- conversion keeps each device's length and mean -------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_two_lengths_keep_their_own_duration_and_mean(tmp_path, suffix):
    trace = quiet_convert(pensieve_pair(tmp_path), tmp_path / f"o{suffix}")
    assert trace.devices == ("long", "short")
    assert trace.ends_s.tolist() == [4.0, 2.0] and trace.end_s == 4.0
    stats = summarise(trace.columns["throughput_mbps"], trace)
    assert [s.mean for s in stats] == [3.0, 2.0]
    assert [s.length_s for s in stats] == [4.0, 2.0]
    assert trace.meta.device_duration_s == {"long": 4.0, "short": 2.0}


def test_a_shorter_device_loops_on_its_own_length_when_replayed(tmp_path):
    trace = quiet_convert(pensieve_pair(tmp_path), tmp_path / "o.csv")
    sig = replay_signals(trace, trace.columns["throughput_mbps"], np.arange(2), np.zeros(2))
    # short: 1 on [0,1), 3 on [1,2), then again from 2 -- not its last value held to 4
    assert [sig.at(t)[1] for t in (0.5, 1.5, 2.5, 3.5, 4.5)] == [1, 3, 1, 3, 1]
    assert [sig.at(t)[0] for t in (0.5, 2.5, 4.5)] == [4, 2, 4]
    assert sig.end_s == 4.0  # 4 is a whole number of both lengths: exact forever
    assert time_mean(sig, 0) == 3.0 and time_mean(sig, 1) == 2.0


def test_the_channel_replays_the_shorter_device_at_its_own_rate(tmp_path):
    trace = quiet_convert(pensieve_pair(tmp_path), tmp_path / "o.csv")
    devices = (DeviceSpec(name="a"), DeviceSpec(name="b"))
    ch = trace_channel(trace, devices, -174.0, None)
    bw = np.full(2, 5e6)  # the reference bandwidth: the rate is the trace's throughput
    # b from t = 2: 1 Mbit/s again on [2, 3), so 1 Mbit ends at 3 (held at 3 Mbit/s: 2.333)
    end = ch.transfer_end_s(np.array([1, 1]), np.array([2.0, 3.0]), np.array([1e6, 3e6]), bw)
    assert end.tolist() == pytest.approx([3.0, 4.0], abs=1e-9)


def test_random_offsets_fall_within_each_devices_own_length(tmp_path):
    trace = quiet_convert(pensieve_pair(tmp_path), tmp_path / "o.csv")
    names = tuple(f"d{i}" for i in range(40))
    rows, offsets = map_devices(trace, names, "random-offset", np.random.default_rng(5))
    assert np.all(offsets < trace.ends_s[rows]) and np.any(offsets[rows == 0] > 2.0)
    sig = replay_signals(trace, trace.columns["throughput_mbps"], rows, offsets)
    native = trace.columns["throughput_mbps"]
    for t in np.linspace(0.0, 11.9, 61):
        for k in range(len(names)):
            local = (t + offsets[k]) % trace.ends_s[rows[k]]
            want = native[rows[k], np.searchsorted(trace.times_s, local, side="right") - 1]
            assert sig.at(t)[k] == want


def test_a_table_mapping_loops_each_row_on_its_trace_devices_length(tmp_path):
    trace = quiet_convert(pensieve_pair(tmp_path), tmp_path / "o.csv")
    values = trace.columns["throughput_mbps"][[1, 0]]  # already mapped: row 0 replays "short"
    sig = replay_signals(trace, values, np.arange(2), np.zeros(2), trace_rows=np.array([1, 0]))
    assert [sig.at(t)[0] for t in (0.5, 1.5, 2.5)] == [1, 3, 1]
    assert [sig.at(t)[1] for t in (0.5, 2.5, 4.5)] == [4, 2, 4]


def test_the_channel_honours_a_table_mapping_on_traces_of_different_lengths(tmp_path):
    trace = quiet_convert(pensieve_pair(tmp_path), tmp_path / "o.csv")
    devices = (DeviceSpec(name="a"), DeviceSpec(name="b"))
    ch = trace_channel(trace, devices, -174.0, None, mapping={"a": "short", "b": "long"})
    assert ch.snr_coef_hz(2.5)[0] == ch.snr_coef_hz(0.5)[0]  # "short" loops after 2 s


def test_under_hold_a_shorter_device_holds_its_own_last_value(tmp_path):
    trace = quiet_convert(pensieve_pair(tmp_path), tmp_path / "o.csv")
    sig = replay_signals(
        trace, trace.columns["throughput_mbps"], np.arange(2), np.zeros(2), "hold"
    )
    assert [sig.at(t)[1] for t in (0.5, 1.5, 2.5, 10.0)] == [1, 3, 3, 3]


def test_lengths_without_a_whole_common_multiple_share_eight_longest_periods():
    assert shared_period_s(np.array([4.0, 2.0])) == 4.0
    assert shared_period_s(np.array([2.25, 2.0])) == 18.0  # 8 x 2.25 = 9 x 2
    assert shared_period_s(np.array([3.0, 2.9])) == 24.0  # 8 x the longest


@needs_norway
def test_real_norway_bus_1_keeps_its_mean_and_duration_inside_the_merge(tmp_path):
    alone = quiet_convert([NORWAY / "norway_bus_1"], tmp_path / "alone.csv")
    files = sorted(NORWAY.glob("norway_*"))
    merged = quiet_convert(files, tmp_path / "all.csv")
    k = merged.devices.index("norway_bus_1")
    solo = summarise(alone.columns["throughput_mbps"], alone)[0]
    inside = summarise(merged.columns["throughput_mbps"], merged)[k]
    assert alone.end_s == pytest.approx(155.25, abs=1e-6)
    assert merged.ends_s[k] == alone.end_s and merged.end_s == pytest.approx(317.74, abs=1e-6)
    assert solo.mean == pytest.approx(2.949, abs=5e-4)
    assert inside.mean == pytest.approx(solo.mean, rel=1e-12)  # it was 2.388 when stretched
    # replayed from t = 0, its time mean over the shared period stays within 1% of its own
    sig = replay_signals(
        merged, merged.columns["throughput_mbps"], np.arange(len(files)), np.zeros(len(files))
    )
    assert time_mean(sig, k) == pytest.approx(solo.mean, rel=0.01)


# --- the converter reports lengths ------------------------------------------------------------


def test_lengths_differing_by_more_than_ten_percent_warn_once_naming_the_files(tmp_path):
    with pytest.warns(DesimWarning) as caught:
        convert_trace("pensieve", pensieve_pair(tmp_path), tmp_path / "o.csv", ImportOptions())
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and "more than 10%" in message
    assert "long 4 s" in message and "short 2 s" in message


def test_lengths_within_ten_percent_convert_silently(tmp_path):
    (tmp_path / "a").write_text(LONG)  # 4 s
    (tmp_path / "b").write_text("0 1\n0.95 1\n1.9 1\n2.85 1\n")  # 3.8 s
    with warnings.catch_warnings():
        warnings.simplefilter("error", DesimWarning)
        trace = convert_trace(
            "pensieve", [tmp_path / "a", tmp_path / "b"], tmp_path / "o.csv", ImportOptions()
        )
    assert trace.ends_s.tolist() == pytest.approx([4.0, 3.8])


def test_the_convert_command_prints_each_duration_and_one_warning_line(tmp_path, capsys):
    a, b = pensieve_pair(tmp_path)
    out = tmp_path / "o.csv"
    assert main(["traces", "convert", "--from", "pensieve", str(a), str(b), str(out)]) == 0
    cap = capsys.readouterr()
    assert "  long: 4 s\n" in cap.out and "  short: 2 s\n" in cap.out
    warned = [line for line in cap.err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "long 4 s" in warned[0] and "short 2 s" in warned[0]
    written = read_trace(out)
    assert written.meta.command.startswith("desim traces convert --from pensieve ")
    assert written.ends_s.tolist() == [4.0, 2.0]


# --- metadata and messages --------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, missing",
    [
        ("device,gain_db\na,1\n", "time_s"),
        ("time_s,gain_db\n0,1\n", "device"),
        ("gain_db\n1\n", "device, time_s"),
        ("device,time_s,speed_factor\na,0,1\n", "available"),
        ("device,time_s,available\na,0,1\n", "speed_factor"),
    ],
)
def test_the_missing_column_message_names_only_the_missing_columns(tmp_path, header, missing):
    path = tmp_path / "t.csv"
    path.write_text(header)
    with pytest.raises(TraceError) as exc:
        read_trace(path)
    message = str(exc.value)
    named = message.split("missing column(s) ", 1)[1].split(" (", 1)[0]
    assert named == missing


def test_device_durations_are_checked_against_the_devices():
    frame = tidy_frame(["x", "y"], np.array([0.0, 1.0]), {"gain_db": np.zeros((2, 2))})
    with pytest.raises(TraceError, match="device_duration_s names unknown device"):
        trace_from_frame(frame, "t.csv", TraceMeta(duration_s=3.0, device_duration_s={"z": 2.0}))
    with pytest.raises(TraceError, match=r"of device 'y' \(1\) must exceed its last time_s 1"):
        trace_from_frame(frame, "t.csv", TraceMeta(duration_s=3.0, device_duration_s={"y": 1.0}))
    with pytest.raises(TraceError, match="exceeds duration_s 3"):
        trace_from_frame(frame, "t.csv", TraceMeta(duration_s=3.0, device_duration_s={"y": 5.0}))
    with pytest.raises(TraceError, match="must be a number > 0"):
        TraceMeta.from_mapping({"device_duration_s": {"y": "soon"}}, "t.csv")
    trace = trace_from_frame(
        frame, "t.csv", TraceMeta(duration_s=3.0, device_duration_s={"y": 1.5})
    )
    assert trace.ends_s.tolist() == [3.0, 1.5] and not trace.same_length


def test_equal_lengths_keep_one_shared_period_and_no_per_device_metadata(tmp_path):
    (tmp_path / "a").write_text(LONG)
    (tmp_path / "b").write_text("0 1\n1 2\n2 3\n3 4\n")
    trace = quiet_convert([tmp_path / "a", tmp_path / "b"], tmp_path / "o.csv")
    assert trace.same_length and trace.meta.device_duration_s is None
    assert "device_duration_s" not in (tmp_path / "o.csv").read_text()


# --- the shipped real subset and figure (i) ---------------------------------------------------


def test_the_shipped_norway_subset_reads_and_carries_its_licence():
    assert SHIPPED in shipped_traces()
    path = resolve_trace_path("shipped:" + SHIPPED)
    assert path.stat().st_size < 200_000
    trace = read_trace(path)
    assert trace.quantity == "throughput_mbps" and len(trace.devices) == 6
    assert trace.end_policy == "loop" and not trace.same_length
    assert trace.ends_s.min() > 100.0 and trace.end_s == pytest.approx(317.74, abs=1e-6)
    notice = path.with_name("norway-hsdpa-6dev.LICENSE.txt")
    text = notice.read_text()
    for needed in ("Riiser", "MMSys 2013", "10.1145/2483977.2483991", "Pensieve", "MIT License",
                   "Copyright (c) [2017] [Pensieve]"):
        assert needed in text
    assert notice.name in trace.meta.licence and "Riiser" in trace.meta.source
    readme = (ROOT / "traces" / "README.md").read_text()
    assert SHIPPED in readme and trace.meta.command in readme


@needs_norway
def test_the_shipped_norway_subset_regenerates_from_its_command(tmp_path, monkeypatch):
    shipped = read_trace(resolve_trace_path("shipped:" + SHIPPED))
    argv = shlex.split(shipped.meta.command)[1:]
    out = argv.index(SHIPPED)
    argv[out] = str(tmp_path / SHIPPED)
    monkeypatch.chdir(NORWAY.parent)  # the command names norway-hsdpa/... from the set's folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DesimWarning)
        assert main(argv) == 0
    fresh = read_trace(tmp_path / SHIPPED)
    assert fresh.devices == shipped.devices
    np.testing.assert_array_equal(fresh.ends_s, shipped.ends_s)
    np.testing.assert_array_equal(fresh.times_s, shipped.times_s)
    for col, vals in shipped.columns.items():
        np.testing.assert_array_equal(fresh.columns[col], vals)


def test_figure_i_resolves_from_the_package_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared and no results/ folder around
    spec, spec_dir = load_sweep_spec(ROOT / "experiments" / "fig_i_trace_replay.toml")
    runs = expand(spec, spec_dir)
    assert len(runs) == 1
    scen = runs[0].scenario
    assert scen.channel.kind == "trace" and scen.channel.path == "shipped:" + SHIPPED
    sim = build_simulation(scen)
    assert sim.channel.signals.values.shape[0] == len(sim.devices) == 20
    # the six devices loop on their own lengths inside 8 x the longest (317.74 s)
    assert sim.channel.signals.end_s == pytest.approx(8 * 317.74, abs=1e-5)
