import subprocess
import sys

import pandas as pd
import pytest

from desim.cli import main


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
        (["run", "--allocator", "nope"], 2, "known: greedy, random"),
        (["run", "--set", "devices.population.count=5"], 2, "5 devices for 12 blocks"),
        (["run", "--set", "devices.population.memory_bytes=1e8"], 3, "block 12"),
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
