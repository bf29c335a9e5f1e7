"""Reading tidy traces, every importer on hand-written files, bad input, and the CLI."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from desim.cli.main import main
from desim.errors import TraceError, UnknownNameError
from desim.io.traces import convert_trace, read_trace, write_trace
from desim.world.importers import TRACE_FORMATS
from desim.world.tidy import tidy_frame
from desim.world.trace_import import ImportOptions
from desim.world.traces import TraceMeta


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cli(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# --- tidy files -------------------------------------------------------------------------------


def test_csv_with_header_metadata(tmp_path):
    p = write(
        tmp_path / "t.csv",
        "# end_policy: hold\n# source: hand\n# licence: CC0\n"
        "device,time_s,snr_db,ref_bandwidth_hz\na,0,10,1e6\na,2,20,1e6\nb,1,0,2e6\n",
    )
    tr = read_trace(p)
    assert tr.devices == ("a", "b") and tr.quantity == "snr_db"
    assert tr.end_policy == "hold" and tr.meta.source == "hand" and tr.meta.licence == "CC0"
    assert tr.end_s == pytest.approx(4.0)  # last time 2 + median step 2
    assert tr.times_s.tolist() == [0, 1, 2]
    assert tr.columns["snr_db"].tolist() == [[10, 10, 20], [0, 0, 0]]


def test_parquet_roundtrip_with_sidecar(tmp_path):
    frame = tidy_frame(["a"], np.array([0.0, 0.5]), {"gain_db": np.array([[-90.0, -95.0]])})
    meta = TraceMeta(end_policy="hold", duration_s=2.0, source="s", licence="l")
    write_trace(frame, meta, tmp_path / "g.parquet")
    assert (tmp_path / "g.json").exists()
    tr = read_trace(tmp_path / "g.parquet")
    assert tr.end_s == 2.0 and tr.end_policy == "hold" and tr.meta.licence == "l"
    assert tr.columns["gain_db"].tolist() == [[-90.0, -95.0]]


def test_read_trace_caches_by_content_and_its_arrays_are_read_only(tmp_path):
    """A sweep worker parses each trace once; an edit to the file or its sidecar re-reads."""
    frame = tidy_frame(["a"], np.array([0.0, 0.5]), {"gain_db": np.array([[-90.0, -95.0]])})
    path = tmp_path / "g.parquet"
    write_trace(frame, TraceMeta(end_policy="hold", duration_s=2.0), path)
    first = read_trace(path)
    assert read_trace(path) is first
    with pytest.raises(ValueError, match="read-only"):
        first.columns["gain_db"][0, 0] = 0.0
    frame["gain_db"] = [-80.0, -85.0]
    write_trace(frame, TraceMeta(end_policy="hold", duration_s=2.0), path)
    assert read_trace(path).columns["gain_db"].tolist() == [[-80.0, -85.0]]
    write_trace(frame, TraceMeta(end_policy="hold", duration_s=3.0), path)  # sidecar only
    assert read_trace(path).end_s == 3.0


BAD = [
    ("device,time_s,gain_db\na,0,1\na,2,1\na,2,3\n", "t.csv line 4: time_s 2 is not after"),
    ("device,time_s,gain_db\na,0,1\na,1,nan\n", "t.csv line 3: gain_db is NaN"),
    ("device,time_s,gain_db\na,0,1\na,1,\n", "t.csv line 3: gain_db is NaN"),
    ("device,time_s,gain_db\na,0,1\na,x,1\n", "t.csv line 3: time_s is 'x'"),
    (
        "# source: s\ndevice,time_s,throughput_mbps,ref_bandwidth_hz\na,0,1,1e6\na,1,-2,1e6\n",
        "t.csv line 4: negative throughput_mbps",
    ),
    ("", "t.csv: empty trace"),
    ("device,time_s,gain_db\n", "t.csv: empty trace: no data rows"),
    ("device,time_s,throughput_mbps\na,0,1\n", "needs the reference bandwidth"),
    ("device,time_s,foo\na,0,1\n", "expected columns device, time_s and one of"),
    ("device,time_s,gain_db,snr_db\na,0,1,1\n", "several value columns"),
    ("device,time_s,speed_factor,available\na,0,1,2\n", "t.csv line 2: available must be 0 or 1"),
    ("device,time_s,gain_db\na,0,1\n", "single row; give duration_s"),
    ("# duration_s: 1\ndevice,time_s,gain_db\na,0,1\na,1,1\n", "duration_s 1 must exceed"),
    ("# end_policy: forever\ndevice,time_s,gain_db\na,0,1\n", "end_policy must be 'loop' or"),
    ("# colour: red\ndevice,time_s,gain_db\na,0,1\n", "unknown metadata key(s) colour"),
    (
        "device,time_s,throughput_mbps,ref_bandwidth_hz\na,0,5000,1e3\na,1,1,1e3\n",
        "t.csv line 2: throughput 5000 Mbit/s over 1000 Hz exceeds",
    ),
]


@pytest.mark.parametrize("text, fragment", BAD)
def test_bad_tidy_input_names_file_and_line(tmp_path, text, fragment):
    p = write(tmp_path / "t.csv", text)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    assert fragment in str(exc.value)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(TraceError, match="nope.csv: file not found"):
        read_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match=r"unknown trace format '\.xlsx'"):
        read_trace(write(tmp_path / "t.xlsx", "x"))


# --- importers on hand-written files ----------------------------------------------------------


def test_ns3_importer_power_averages_resource_blocks(tmp_path):
    # 2 resource blocks x 3 samples (1 ms): columns (0, 0) dB, (3.0103, -inf-ish), ...
    p = write(tmp_path / "fading_EPA.fad", "0 10 -3\n0 0 -3\n")
    tr = convert_trace("ns3", [p], tmp_path / "o.csv", ImportOptions(path_loss_db=100.0))
    g = tr.columns["gain_db"][0]
    want = 10 * np.log10([1.0, (10 + 1) / 2, 10**-0.3]) - 100.0
    np.testing.assert_allclose(g, want, atol=1e-6)
    assert tr.times_s.tolist() == pytest.approx([0.0, 0.001, 0.002])
    assert tr.end_s == pytest.approx(0.003) and tr.end_policy == "loop"
    assert tr.devices == ("fading_EPA",)


def test_ns3_importer_rejects_ragged_rows(tmp_path):
    p = write(tmp_path / "f.fad", "0 1 2\n0 1\n")
    with pytest.raises(TraceError, match="f.fad line 2: 2 samples, expected 3"):
        convert_trace("ns3", [p], tmp_path / "o.csv", ImportOptions())


def test_mahimahi_importer_counts_opportunities_per_window(tmp_path):
    # window 100 ms: 3 packets in [0,100), none in [100,200), 1 in [200,300)
    p = write(tmp_path / "lte.up", "0\n5\n5\n250\n")
    tr = convert_trace(
        "mahimahi", [p], tmp_path / "o.csv", ImportOptions(window_ms=100.0, ref_bandwidth_hz=10e6)
    )
    mbps = 1500 * 8 / 0.1 / 1e6  # one packet per window = 0.12 Mbit/s
    assert tr.columns["throughput_mbps"][0].tolist() == pytest.approx([3 * mbps, 0.0, mbps])
    assert tr.end_s == pytest.approx(0.3) and tr.columns["ref_bandwidth_hz"][0, 0] == 10e6


def test_mahimahi_importer_rejects_decreasing_timestamps(tmp_path):
    p = write(tmp_path / "m.up", "1\n5\n3\n")
    with pytest.raises(TraceError, match="m.up line 3: timestamp 3 ms is before"):
        convert_trace("mahimahi", [p], tmp_path / "o.csv", ImportOptions())


def test_pensieve_importer(tmp_path):
    a = write(tmp_path / "bus_a", "10.0\t2.0\n10.5\t0.0\n11.5 4.0\n")
    b = write(tmp_path / "bus_b", "0 1\n1 1.5\n")
    tr = convert_trace("pensieve", [a, b], tmp_path / "o.parquet", ImportOptions())
    assert tr.devices == ("bus_a", "bus_b")
    assert tr.times_s.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert tr.columns["throughput_mbps"].tolist() == [[2, 0, 0, 4], [1, 1, 1.5, 1.5]]
    assert tr.columns["ref_bandwidth_hz"][0, 0] == 5e6  # documented default for this format
    assert tr.end_s == pytest.approx(2.25)  # bus_a: last 1.5 + its median step 0.75


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("0 1\n0 2\n", "p line 2: time 0 s is not after"),
        ("0 1\n1 nan\n", "p line 2: throughput is nan"),
        ("0 1\n1 -1\n", "p line 2: negative throughput"),
        ("0 1\n1\n", "p line 2: expected 'time_s throughput_mbps'"),
        ("\n\n", "p: empty trace"),
    ],
)
def test_pensieve_bad_input(tmp_path, text, fragment):
    with pytest.raises(TraceError) as exc:
        convert_trace(
            "pensieve", [write(tmp_path / "p", text)], tmp_path / "o.csv", ImportOptions()
        )
    assert fragment in str(exc.value)


def test_5gophers_importer_all_three_layouts(tmp_path):
    thr = write(
        tmp_path / "01-Throughput_data.csv",
        "protocol,carrier,num_tcp_conn,server_location,run_num,seq_num,throughput_mbps\n"
        "TCP,SPRINT,1,US-East,1,0,10\nTCP,SPRINT,1,US-East,1,1,20\n"
        "TCP,VERIZON,8,US-West,2,0,300\nTCP,VERIZON,8,US-West,2,2,0\n",
    )
    walk = write(
        tmp_path / "03-User-Mobility_walking-trace.csv",
        "protocol,num_tcp_conn,seq_num,anonymized_mCid,radio_type,throughput_mbps,nrStatus,"
        "primitive_handoff_type\nTCP,8,1,3,4G,92.1,NOT_RESTRICTED,\nTCP,8,2,3,5G,150,CONNECTED,P2\n",
    )
    car = write(
        tmp_path / "03-User-Mobility_car-driving-trace-1.csv",
        "protocol,num_tcp_conn,seq_num,Sprint_throughput_mbps,Verizon_throughput_mbps\n"
        "TCP,8,0,25,53\nTCP,8,1,65,82\n",
    )
    tr = convert_trace(
        "5gophers", [thr, walk, car], tmp_path / "o.csv", ImportOptions(ref_bandwidth_hz=400e6)
    )
    assert tr.devices == (
        "SPRINT-1conn-US-East-run1",
        "VERIZON-8conn-US-West-run2",
        "walking",
        "car-driving-trace-1-Sprint",
        "car-driving-trace-1-Verizon",
    )
    v = tr.columns["throughput_mbps"]
    assert tr.times_s.tolist() == [0, 1, 2]
    assert v[1].tolist() == [300, 300, 0]  # the missing second holds the previous value
    assert v[2].tolist() == [92.1, 150, 150]
    assert tr.end_s == 3.0


def test_5gophers_duplicate_second_is_an_error(tmp_path):
    p = write(tmp_path / "w.csv", "seq_num,throughput_mbps\n1,2\n1,3\n")
    with pytest.raises(TraceError, match="w.csv line 3: seq_num 1 repeats"):
        convert_trace("5gophers", [p], tmp_path / "o.csv", ImportOptions())


def test_unknown_format_lists_the_registered_ones(tmp_path):
    p = write(tmp_path / "x", "0 1\n")
    known = ", ".join(sorted(TRACE_FORMATS))
    assert known == "5gophers, mahimahi, ns3, pensieve, tidy"
    with pytest.raises(UnknownNameError, match=f"unknown trace format 'csvx'; known: {known}$"):
        convert_trace("csvx", [p], tmp_path / "o.csv", ImportOptions())


def test_formats_come_from_the_registry(capsys):
    assert list(TRACE_FORMATS) == ["ns3", "mahimahi", "pensieve", "5gophers", "tidy"]
    assert TRACE_FORMATS["5gophers"].obj.reads == "csv"
    assert TRACE_FORMATS["tidy"].obj.max_inputs == 1
    code, text, _ = cli(capsys, "traces", "convert", "--help")
    words = " ".join(text.replace("\u2502", " ").split())  # without the help box's borders
    assert code == 0 and "Input format: ns3, mahimahi, pensieve, 5gophers, tidy." in words


def test_tidy_takes_one_input_file(tmp_path):
    a = write(tmp_path / "a.csv", "device,time_s,gain_db\nd,0,-80\nd,1,-90\n")
    with pytest.raises(TraceError, match="--from tidy takes one input file"):
        convert_trace("tidy", [a, a], tmp_path / "o.csv", ImportOptions())
    tr = convert_trace("tidy", [a], tmp_path / "o.parquet", ImportOptions())
    assert tr.columns["gain_db"].tolist() == [[-80.0, -90.0]]


# --- CLI ------------------------------------------------------------------------------------


def test_cli_convert_info_plot(tmp_path, capsys):
    a = write(tmp_path / "bus_a", "0 2\n1 0\n2 4\n")
    out = tmp_path / "o.csv"
    code, text, err = cli(
        capsys,
        "traces",
        "convert",
        "--from",
        "pensieve",
        str(a),
        str(out),
        "--ref-bandwidth-hz",
        "1e6",
    )
    assert code == 0, err
    code, text, err = cli(capsys, "traces", "info", str(out))
    assert code == 0, err
    assert "devices: 1 (bus_a)" in text and "duration: 3 s" in text
    # time-weighted mean of (2, 0, 4) Mbit/s at the reference bandwidth is 2; 1/3 of time zero
    assert "2.000" in text and "33.3%" in text
    code, _, err = cli(capsys, "traces", "plot", str(out), "--out", str(tmp_path / "o.png"))
    assert code == 0, err
    assert (tmp_path / "o.png").stat().st_size > 1000


def test_cli_bad_format_is_one_error_line(tmp_path, capsys):
    a = write(tmp_path / "bus_a", "0 2\n")
    code, out, err = cli(
        capsys, "traces", "convert", "--from", "nope", str(a), str(tmp_path / "o.csv")
    )
    assert code == 2 and err.count("error:") == 1 and "unknown trace format 'nope'" in err
    code, out, err = cli(capsys, "traces", "info", str(tmp_path / "missing.csv"))
    assert code == 2 and "missing.csv: file not found" in err and "Traceback" not in err


def test_cli_generate_channel_and_compute_are_seeded(tmp_path, capsys):
    args = [
        "traces",
        "generate",
        "channel",
        "--devices",
        "3",
        "--duration-s",
        "5",
        "--step-s",
        "0.1",
        "--scenario",
        "uma",
        "--speed-kmh",
        "30",
        "--carrier-ghz",
        "2",
        "--seed",
        "4",
    ]
    assert cli(capsys, *args, "--out", str(tmp_path / "a.csv"))[0] == 0
    assert cli(capsys, *args, "--out", str(tmp_path / "b.csv"))[0] == 0
    a = read_trace(tmp_path / "a.csv")
    b = read_trace(tmp_path / "b.csv")
    np.testing.assert_array_equal(a.columns["gain_db"], b.columns["gain_db"])
    assert a.devices == ("dev0", "dev1", "dev2") and a.end_s == pytest.approx(5.0)
    assert "--scenario uma" in a.meta.command and "--seed 4" in a.meta.command
    code, _, err = cli(
        capsys,
        "traces",
        "generate",
        "compute",
        "--devices",
        "4",
        "--duration-s",
        "600",
        "--seed",
        "2",
        "--out",
        str(tmp_path / "c.csv"),
    )
    assert code == 0, err
    c = read_trace(tmp_path / "c.csv")
    assert c.quantity == "compute" and len(c.devices) == 4 and c.end_s == 600.0
    assert np.all(c.columns["speed_factor"] > 0) and np.all(c.columns["speed_factor"] <= 1)
    code, _, err = cli(
        capsys,
        "traces",
        "generate",
        "channel",
        "--scenario",
        "rural",
        "--out",
        str(tmp_path / "x.csv"),
    )
    assert code == 2 and "unknown scenario 'rural'" in err


def test_scenario_replays_a_converted_trace(tmp_path, capsys):
    a = write(tmp_path / "bus", "0 2\n1 0\n2 4\n")
    out = tmp_path / "bus.csv"
    convert_trace("pensieve", [a], out, ImportOptions(ref_bandwidth_hz=1e6))
    code, _, err = cli(
        capsys,
        "run",
        "--rounds",
        "3",
        "--out",
        str(tmp_path / "r"),
        "--set",
        'channel.kind="trace"',
        "--set",
        f'channel.path="{out}"',
        "--set",
        'compute.kind="constant"',
    )
    assert code == 0, err
    rounds = pd.read_csv(tmp_path / "r" / "rounds.csv")
    assert len(rounds) == 3 and np.all(np.isfinite(rounds.latency_s))
