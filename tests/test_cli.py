import subprocess
import sys

import pandas as pd
import pytest

from desim.cli.main import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_default_prints_summary_and_writes_tables(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--rounds", "5", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "round latency p95" in out and "results written to" in out
    assert len(pd.read_csv(tmp_path / "r" / "rounds.csv")) == 5
    assert (tmp_path / "r" / "run.json").exists()


@pytest.mark.parametrize(
    "argv, code, fragment",
    [
        (["run", "--set", "server.total_bandwidth_hz=-1"], 2, "server.total_bandwidth_hz"),
        (["run", "--set", "server.nope=1"], 2, "server.nope: unknown key"),
        (["run", "/definitely/missing.toml"], 2, "missing.toml: file not found"),
        (["run", "--allocator", "nope"], 2, "unknown allocator 'nope'; known: "),
        (["run", "--set", "devices.population.count=5"], 2, "5 devices for 12 blocks"),
        (["run", "--set", "devices.population.memory_bytes=1e8"], 3, "block 12"),
        (["run", "--set", "devices.population.memory_bytes=1e8"], 3,
         "nothing was written (--set 'run.on_infeasible=\"skip\"' records such a round"),
        (["run", "--set", "garbage"], 2, "expected section.key=value"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, tmp_path, argv, code, fragment):
    got, out, err = run_cli(capsys, *argv, "--out", str(tmp_path / "x"))
    assert got == code
    assert fragment in err
    assert "Traceback" not in err + out
    assert err.count("error:") == 1


def test_allocators_lists_registered_names(capsys):
    code, out, _ = run_cli(capsys, "allocators")
    assert code == 0 and "greedy" in out and "random" in out


def test_entry_point_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "desim.cli", "run", "--set", "server.total_bandwidth_hz=-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "server.total_bandwidth_hz" in proc.stderr and "Traceback" not in proc.stderr


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("desim ")


def test_trace_out_writes_perfetto_json(tmp_path, capsys):
    import json

    trace = tmp_path / "t.json"
    code, out, err = run_cli(
        capsys, "run", "--rounds", "3", "--out", str(tmp_path / "r"), "--trace-out", str(trace)
    )
    assert code == 0, err
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    # 3 round slices + 3 rounds x 12 blocks x (compute + upload)
    assert len(slices) == 3 + 3 * 12 * 2
    tracks = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert "server" in tracks and len(tracks) >= 13
    dev = pd.read_csv(tmp_path / "r" / "device_rounds.csv")
    first = [e for e in slices if e["name"] == "upload block 12"][0]
    row = dev[(dev["round"] == 0) & (dev.block == 12)].iloc[0]
    assert first["ts"] == pytest.approx(row.upload_start_s * 1e6)
    assert first["dur"] == pytest.approx((row.upload_end_s - row.upload_start_s) * 1e6)
