"""Sweeps under stress: Ctrl-C, hostile spec names, huge grids, edited files, twin resumes, Ray.

Each test drives the real ``desim sweep`` command in a subprocess where the behaviour is about
processes and signals, and the library where it is about values.
"""

import itertools
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from desim.errors import InputError
from desim.experiments.sweep import execute, run_sweep
from desim.experiments.sweep_spec import (
    expand,
    iter_runs,
    load_sweep_spec,
    referenced_files,
    run_count,
    run_key,
)
from desim.experiments.sweep_store import RunOutcome, completed_keys, store_outcome
from desim.io.scenario import load_scenario

from .test_sweep import comparable

SMALL = """
name = "robust"
seeds = [0, 1]
[set]
"run.rounds" = {rounds}
[grid]
"devices.population.count" = [12, 16]
[[allocators]]
name = "greedy"
[[allocators]]
name = "random"
"""
"""8 runs; at 600 rounds each takes about half a second."""

SWEEP = [sys.executable, "-m", "desim.cli", "sweep"]


def small_spec(tmp_path: Path, rounds: int) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SMALL.format(rounds=rounds))
    return path


def live_group_members(pgid: int) -> list[str]:
    """``pid state command`` of each process of group ``pgid`` that is not a zombie (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(f"{stat.parent.name} {state} {comm}")
    return found


def wait_group_gone(pgid: int, timeout_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := live_group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_stored(out: Path, count: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(completed_keys(out)) < count:
        assert proc.poll() is None, "the sweep ended before it was interrupted"
        assert time.monotonic() < deadline, "no run was stored in time"
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    "workers, target",
    [
        (2, "group"),
        (2, "parent"),
        (1, "group"),
        pytest.param("ray", "group", marks=pytest.mark.slow),
        pytest.param("ray", "parent", marks=pytest.mark.slow),
    ],
    ids=["2-workers-terminal", "2-workers-parent-only", "1-worker-terminal", "ray-terminal",
         "ray-parent-only"],
)
def test_ctrl_c_stops_the_sweep_and_resume_completes_it(tmp_path, workers, target):
    spec = small_spec(tmp_path, rounds=300)
    out = tmp_path / "out"
    cmd = [*SWEEP, str(spec), "--out", str(out)]
    if workers == "ray":
        pytest.importorskip("ray")
        cmd += ["--backend", "ray", "--workers", "2"]
    else:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    pgid = proc.pid
    try:
        wait_stored(out, 1, proc)
        # a terminal's Ctrl-C reaches the whole foreground group; `kill -INT` only the parent
        if target == "group":
            os.killpg(pgid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert wait_group_gone(pgid) == []
    stored = completed_keys(out)
    assert 1 <= len(stored) < 8, "the workers must stop, not finish the queued runs"
    assert f"interrupted: {len(stored)} of 8 runs stored in {out}; resume with: " in stderr
    assert f"--out {out} --resume" in stderr
    assert "Traceback" not in stderr
    assert not list((out / ".staging").glob("*"))
    if (workers, target) != (2, "group"):
        return
    resumed = subprocess.run(
        [*SWEEP, str(spec), "--out", str(out), "--workers", "2", "--resume"],
        capture_output=True, text=True, timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{8 - len(stored)} run, {len(stored)} already done, 0 failed of 8" in resumed.stdout
    fresh = run_sweep(expand(*load_sweep_spec(spec)), tmp_path / "fresh")
    pd.testing.assert_frame_equal(
        comparable(pd.read_parquet(out / "summary.parquet")),
        comparable(pd.read_parquet(fresh.summary_path)),
    )


def test_interrupt_in_the_progress_callback_cancels_queued_runs(tmp_path):
    runs = expand(*load_sweep_spec(small_spec(tmp_path, rounds=300)))
    out = tmp_path / "out"

    def interrupt(ok: bool) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(runs, out, workers=2, progress=interrupt)
    # the first run finished; at most the other worker's run was stored too, not the queue
    assert 1 <= len(completed_keys(out)) <= 2
    assert not list((out / ".staging").glob("*"))
    rep = run_sweep(runs, out, workers=2, resume=True)
    assert rep.skipped + rep.succeeded == 8 and rep.failed == 0


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "a\\b", "..", ".hidden"])
def test_spec_name_must_be_a_plain_folder_name(tmp_path, name):
    path = tmp_path / "s.toml"
    path.write_text(f"name = '{name}'\n[[allocators]]\nname = \"greedy\"\n")  # literal
    with pytest.raises(InputError, match=r"s\.toml: name: expected a folder name") as exc:
        load_sweep_spec(path)
    assert repr(name) in str(exc.value)


def test_spec_name_may_use_letters_digits_dots_dashes_underscores(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "fig_a-devices.v2"\n[[allocators]]\nname = "greedy"\n')
    assert load_sweep_spec(path)[0].name == "fig_a-devices.v2"


MILLION = """
name = "million"
seeds = {seeds}
[grid]
"devices.population.count" = [12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
"server.total_bandwidth_hz" = [1e7, 2e7, 3e7, 4e7, 5e7, 6e7, 7e7, 8e7, 9e7, 1e8]
"server.aggregation_s" = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
[zip]
"model.lora_rank" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
"model.batch_size" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
[[allocators]]
name = "greedy"
"""


def test_dry_run_of_a_million_runs_streams_and_a_real_run_is_refused(tmp_path):
    path = tmp_path / "million.toml"
    path.write_text(MILLION.format(seeds=list(range(100))))

    def cap_memory() -> None:  # the old dry-run resolved every run: gigabytes
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = subprocess.run(
        [*SWEEP, str(path), "--dry-run", "--show", "3", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=60, preexec_fn=cap_memory,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "sweep million: 1,000,000 runs" in proc.stdout
    assert "showing the first 3 of 1,000,000 runs" in proc.stdout
    assert "more than 100,000 runs is refused" in proc.stdout
    spec, d = load_sweep_spec(path)
    assert run_count(spec) == 10**6
    with pytest.raises(InputError, match=r"1,000,000 runs exceed the limit of 100,000 runs"):
        expand(spec, d)
    for run in itertools.islice(iter_runs(spec, d), 3):  # the first runs, with their real keys
        assert run.key in proc.stdout
    assert not (tmp_path / "o").exists()


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + " ")


@pytest.mark.parametrize(
    "override, file",
    [
        ("model.name={path}", "model.json"),
        ('compute.kind="trace"\ncompute.path={path}', "compute.csv"),
        ("cost.profiles.cpu-reference={path}", "profile.csv"),
        ("scheme.kr_scores={path}", "kr.csv"),
        ('channel.kind="trace"\nchannel.path={trace}', "trace.json"),  # the trace's sidecar
    ],
    ids=["model-config", "compute-trace", "profile", "kr-scores", "trace-sidecar"],
)
def test_run_key_changes_when_any_file_the_run_reads_changes(tmp_path, override, file):
    path = tmp_path / file
    path.write_text('{"hidden_size": 768}' if file.endswith(".json") else "a,b\n1,2\n")
    trace = tmp_path / "trace.csv"
    trace.write_text("device,time_s,throughput_mbps,ref_bandwidth_hz\nd0,0,5,5e6\n")
    sets = override.format(path=f'"{path}"', trace=f'"{trace}"').split("\n")
    k1 = run_key(load_scenario(None, sets))
    assert path in referenced_files(load_scenario(None, sets))
    assert run_key(load_scenario(None, sets)) == k1
    _edit(path)
    assert run_key(load_scenario(None, sets)) != k1


def test_twin_resumes_of_one_folder_all_succeed(tmp_path):
    spec = small_spec(tmp_path, rounds=2)
    spec.write_text(spec.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3]"))
    out = tmp_path / "out"
    cmd = [*SWEEP, str(spec), "--out", str(out), "--resume"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for rc, stdout, stderr in results:
        assert rc == 0, stderr
        assert "0 failed of 16" in stdout
    assert len(completed_keys(out)) == 16
    assert not (out / "failures").exists()
    assert not list((out / ".staging").glob("*"))
    summary = pd.read_parquet(out / "summary.parquet")
    assert list(summary.status) == ["ok"] * 16


def test_a_run_a_twin_stored_first_is_kept(tmp_path):
    runs = expand(*load_sweep_spec(small_spec(tmp_path, rounds=2)))[:1]
    out = tmp_path / "out"
    run_sweep(runs, out)
    stored = out / "runs" / runs[0].key / "run.json"
    before = stored.stat().st_mtime_ns
    outcome = execute(runs[0].key, runs[0].scenario.model_dump(mode="json"))
    assert store_outcome(outcome, runs[0], out, out / ".staging" / "1") is True
    assert stored.stat().st_mtime_ns == before
    assert not (out / ".staging" / "1" / runs[0].key).exists()
    failed = RunOutcome(runs[0].key, error="InfeasibleError: a twin's failure")
    assert store_outcome(failed, runs[0], out, out / ".staging" / "1") is True
    assert not (out / "failures" / f"{runs[0].key}.json").exists()


def test_resume_keeps_a_live_twins_staging_and_removes_a_dead_ones(tmp_path):
    spec = small_spec(tmp_path, rounds=2)
    runs = expand(*load_sweep_spec(spec))[:1]
    out = tmp_path / "out"
    twin = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live_dir = out / ".staging" / str(twin.pid) / "abc"
        dead_dir = out / ".staging" / str(dead.pid) / "abc"
        old_layout = out / ".staging" / f"0123456789abcdef-{dead.pid}"
        for d in (live_dir, dead_dir, old_layout):
            d.mkdir(parents=True)
        run_sweep(runs, out)
        assert live_dir.is_dir()
        assert not dead_dir.parent.exists() and not old_layout.exists()
    finally:
        twin.kill()
        twin.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ray_unreachable_address_is_a_clear_error(tmp_path):
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_free_port()}"  # loopback, nothing listens: never another host
    spec = small_spec(tmp_path, rounds=2)
    out = tmp_path / "out"
    cmd = [*SWEEP, str(spec), "--out", str(out), "--backend", "ray", "--address", address]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 3, stderr
    assert f"error: --address {address}: no Ray cluster reachable there" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert completed_keys(out) == set()
