"""Real third-party traces (../shared/traces-external) replay; shipped traces regenerate.

The real traces are never copied into the project; these tests skip when the folder is absent.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from desim.cli.main import main
from desim.engine.assembly import build_simulation
from desim.io.scenario import load_scenario
from desim.io.shipped import shipped_traces
from desim.io.traces import convert_trace, read_trace, resolve_trace_path
from desim.scenario.devices import DeviceSpec
from desim.world.channel_trace import trace_channel
from desim.world.trace_import import ImportOptions

EXTERNAL = Path(__file__).parents[2] / "shared" / "traces-external"
needs_external = pytest.mark.skipif(not EXTERNAL.is_dir(), reason="no ../shared/traces-external")

DEVICES = tuple(DeviceSpec(name=f"d{i}") for i in range(4))


def replay_checks(trace, bw_hz=1e6):
    """The converted trace replays: finite or stalled (never failing) uploads from many starts."""
    rng = np.random.default_rng(0)
    ch = trace_channel(trace, DEVICES, -174.0, rng, mapping="random-offset")
    starts = np.linspace(0.0, 2 * trace.end_s, 8)
    devs = np.arange(8) % 4
    end = ch.transfer_end_s(devs, starts, np.full(8, 1e6), np.full(8, bw_hz))
    assert np.all(end >= starts)
    assert np.all(np.isfinite(end))  # loop policy: any positive rate somewhere finishes


@needs_external
@pytest.mark.parametrize(
    "fmt, names",
    [
        ("pensieve", ["norway-hsdpa/norway_bus_1", "norway-hsdpa/norway_car_1"]),
        ("pensieve", ["fcc-broadband/trace_215252_http---www.msn.com"]),
        ("5gophers", ["5gophers/03-User-Mobility_walking-trace.csv"]),
        ("5gophers", ["5gophers/03-User-Mobility_car-driving-trace-1.csv"]),
        ("5gophers", ["5gophers/01-Throughput_data.csv"]),
    ],
)
def test_real_trace_converts_and_replays(tmp_path, fmt, names):
    inputs = [EXTERNAL / n for n in names]
    opts = ImportOptions(ref_bandwidth_hz=400e6 if fmt == "5gophers" else None)
    trace = convert_trace(fmt, inputs, tmp_path / "out.parquet", opts)
    assert trace.quantity == "throughput_mbps" and trace.end_s > 0
    assert np.all(trace.columns["throughput_mbps"] >= 0)
    replay_checks(trace)


@needs_external
def test_every_norway_trace_converts(tmp_path):
    files = sorted(p for p in (EXTERNAL / "norway-hsdpa").iterdir() if p.name.startswith("norway_"))
    trace = convert_trace("pensieve", files, tmp_path / "n.csv", ImportOptions())
    assert len(trace.devices) == len(files)
    # the first Norway sample is 4.03768755221 Mbit/s at t = 0
    row = trace.devices.index("norway_bus_1")
    assert trace.columns["throughput_mbps"][row, 0] == pytest.approx(4.03768755221)


@needs_external
def test_scenario_runs_on_a_converted_norway_trace(tmp_path, capsys):
    src = tmp_path / "norway_bus_1"
    shutil.copy(EXTERNAL / "norway-hsdpa" / "norway_bus_1", src)
    out = tmp_path / "norway.csv"
    assert main(["traces", "convert", "--from", "pensieve", str(src), str(out)]) == 0
    scen = load_scenario(
        None,
        [
            'channel.kind="trace"',
            f'channel.path="{out}"',
            'channel.mapping="random-offset"',
            "run.rounds=3",
        ],
    )
    result = build_simulation(scen).run()
    assert len(result.rounds) == 3


def test_shipped_traces_are_valid_small_and_documented():
    names = shipped_traces()
    assert {"umi-3kmh-20dev.parquet", "compute-load-20dev.csv", "compute-onoff-20dev.csv"} <= set(
        names
    )
    folder = resolve_trace_path("shipped:" + names[0]).parent
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2_000_000
    readme = (Path(__file__).parents[1] / "traces" / "README.md").read_text()
    for name in names:
        trace = read_trace(resolve_trace_path("shipped:" + name))
        assert trace.meta.command.startswith(("desim traces generate", "desim traces convert"))
        assert name in readme and trace.meta.command in readme
        assert trace.meta.licence and trace.meta.source


@pytest.mark.parametrize(
    "name", ["umi-3kmh-20dev.parquet", "compute-load-20dev.csv", "compute-onoff-20dev.csv"]
)
def test_shipped_trace_regenerates_from_its_command(tmp_path, capsys, monkeypatch, name):
    shipped = read_trace(resolve_trace_path("shipped:" + name))
    argv = shipped.meta.command.split()[1:]
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    fresh = read_trace(tmp_path / name)
    assert fresh.devices == shipped.devices and fresh.end_s == shipped.end_s
    np.testing.assert_array_equal(fresh.times_s, shipped.times_s)
    for col, vals in shipped.columns.items():
        # values are rounded (0.01 dB, 1e-6 speed) before writing; allow one rounding step
        np.testing.assert_allclose(fresh.columns[col], vals, atol=0.011)


def test_default_scenario_uses_shipped_traces():
    scen = load_scenario()
    assert scen.channel.kind == "trace" and scen.channel.path.startswith("shipped:")
    assert scen.compute.kind == "trace" and scen.compute.path.startswith("shipped:")
    sim = build_simulation(scen)
    assert sim.channel.signals.values.shape[0] == 20
    assert not np.allclose(sim.compute.speed(0.0), 1.0)  # background load is replayed
