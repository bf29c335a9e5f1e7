import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from desim.errors import InputError, ScenarioError
from desim.experiments.sweep import run_sweep
from desim.experiments.sweep_spec import expand, load_sweep_spec
from desim.experiments.sweep_store import completed_keys

SPEC = """
name = "t"
seeds = [0, 1]
[set]
"run.rounds" = {rounds}
[grid]
"devices.population.count" = [12, 16]
[zip]
"server.total_bandwidth_hz" = [1e7, 2e7]
"server.aggregation_s" = [0.0, 0.5]
[[allocators]]
name = "greedy"
[[allocators]]
name = "random"
label = "rand"
"""


def write_spec(tmp_path: Path, rounds: int = 3, text: str = SPEC) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text.format(rounds=rounds))
    return path


def comparable(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.drop(columns=[c for c in summary.columns if "wall" in c])


def test_expansion_is_grid_times_zip_times_allocators_times_seeds(tmp_path):
    spec, d = load_sweep_spec(write_spec(tmp_path))
    runs = expand(spec, d)
    assert len(runs) == 2 * 2 * 2 * 2
    first = runs[0]
    assert first.axes == {
        "devices.population.count": 12,
        "server.total_bandwidth_hz": 1e7,
        "server.aggregation_s": 0.0,
    }
    assert runs[2].allocator == "rand" and runs[1].seed == 1
    assert first.scenario.server.total_bandwidth_hz == 1e7
    assert len({r.key for r in runs}) == len(runs)
    # the key is a content hash: expanding again gives the same keys
    assert [r.key for r in expand(spec, d)] == [r.key for r in runs]


def test_summary_identical_for_one_and_two_workers(tmp_path):
    spec, d = load_sweep_spec(write_spec(tmp_path))
    runs = expand(spec, d)
    one = run_sweep(runs, tmp_path / "one", workers=1)
    two = run_sweep(runs, tmp_path / "two", workers=2)
    assert one.succeeded == two.succeeded == 16
    a = comparable(pd.read_parquet(one.summary_path))
    b = comparable(pd.read_parquet(two.summary_path))
    pd.testing.assert_frame_equal(a, b)
    key = runs[5].key
    ra = pd.read_parquet(tmp_path / "one" / "runs" / key / "device_rounds.parquet")
    rb = pd.read_parquet(tmp_path / "two" / "runs" / key / "device_rounds.parquet")
    pd.testing.assert_frame_equal(ra, rb)


def test_ray_backend_gives_the_same_summary(tmp_path):
    pytest.importorskip("ray")
    spec, d = load_sweep_spec(write_spec(tmp_path, rounds=2))
    runs = expand(spec, d)[:4]
    local = run_sweep(runs, tmp_path / "local", workers=1)
    ray_rep = run_sweep(runs, tmp_path / "ray", backend="ray", workers=2)
    pd.testing.assert_frame_equal(
        comparable(pd.read_parquet(local.summary_path)),
        comparable(pd.read_parquet(ray_rep.summary_path)),
    )


def test_failed_run_is_recorded_and_does_not_stop_the_sweep(tmp_path):
    text = SPEC.replace(
        '"devices.population.count" = [12, 16]',
        '"devices.population.count" = [12, 16]\n"devices.population.memory_bytes" = [1e8, 4e9]',
    )
    spec, d = load_sweep_spec(write_spec(tmp_path, text=text))
    rep = run_sweep(expand(spec, d), tmp_path / "o")
    assert rep.failed == 16 and rep.succeeded == 16
    summary = pd.read_parquet(rep.summary_path)
    bad = summary[summary.status == "failed"]
    assert len(bad) == 16 and bad.error.str.contains("InfeasibleError").all()
    assert len(list((tmp_path / "o" / "failures").glob("*.json"))) == 16


def test_existing_results_need_resume(tmp_path):
    spec, d = load_sweep_spec(write_spec(tmp_path))
    runs = expand(spec, d)[:2]
    run_sweep(runs, tmp_path / "o")
    with pytest.raises(InputError, match="--resume"):
        run_sweep(runs, tmp_path / "o")
    assert run_sweep(runs, tmp_path / "o", resume=True).skipped == 2


def test_killed_sweep_resumes_without_partial_files(tmp_path):
    spec_path = write_spec(tmp_path, rounds=400)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "desim.cli", "sweep", str(spec_path), "--out", str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(completed_keys(out)) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = completed_keys(out)
    assert 3 <= len(before) < 16, "the kill should land mid-sweep"
    for key in before:  # every stored run is complete
        run_dir = out / "runs" / key
        assert {p.name for p in run_dir.iterdir()} == {
            "rounds.parquet",
            "rounds.csv",
            "device_rounds.parquet",
            "device_rounds.csv",
            "fault_events.parquet",
            "fault_events.csv",
            "timing.parquet",
            "timing.csv",
            "run.json",
        }
        pd.read_parquet(run_dir / "rounds.parquet")
    assert not list((out / "runs").glob(".*"))
    spec, d = load_sweep_spec(spec_path)
    runs = expand(spec, d)
    executed = []
    rep = run_sweep(runs, out, resume=True, progress=executed.append)
    assert rep.skipped == len(before) and len(executed) == 16 - len(before)
    assert not (out / ".staging").exists() or not list((out / ".staging").iterdir())
    fresh = run_sweep(runs, tmp_path / "fresh")
    pd.testing.assert_frame_equal(
        comparable(pd.read_parquet(rep.summary_path)),
        comparable(pd.read_parquet(fresh.summary_path)),
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('name = "x"\nbogus = 1\n[[allocators]]\nname = "greedy"\n', "bogus: unknown key"),
        (
            'name = "x"\n[grid]\n"run.rounds" = []\n[[allocators]]\nname = "greedy"\n',
            "axis 'run.rounds' is empty",
        ),
        ('name = "x"\n', "allocators"),
        (
            'name = "x"\n[zip]\na = [1]\nb = [1, 2]\n[[allocators]]\nname = "greedy"\n',
            "equal lengths",
        ),
    ],
)
def test_bad_spec_is_one_clear_error(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError, match="bad.toml") as exc:
        load_sweep_spec(path)
    assert fragment in str(exc.value)


def test_unknown_allocator_or_key_in_a_run_names_the_run(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\n[[allocators]]\nname = "nope"\n')
    spec, d = load_sweep_spec(path)
    with pytest.raises(ScenarioError, match="unknown allocator 'nope'"):
        expand(spec, d)
    path.write_text('name = "x"\n[grid]\n"server.nope" = [1]\n[[allocators]]\nname = "greedy"\n')
    spec, d = load_sweep_spec(path)
    with pytest.raises(ScenarioError, match=r"server.nope=1.*server.nope: unknown key"):
        expand(spec, d)


def test_run_key_changes_when_a_referenced_trace_file_changes(tmp_path):
    from desim.experiments.sweep_spec import run_key
    from desim.io.scenario import load_scenario

    trace = tmp_path / "t.csv"
    trace.write_text("device,time_s,throughput_mbps,ref_bandwidth_hz\nd0,0,5,5e6\n")
    over = ['channel.kind="trace"', f'channel.path="{trace}"']
    k1 = run_key(load_scenario(None, over))
    assert run_key(load_scenario(None, over)) == k1
    trace.write_text("device,time_s,throughput_mbps,ref_bandwidth_hz\nd0,0,6,5e6\n")
    assert run_key(load_scenario(None, over)) != k1
