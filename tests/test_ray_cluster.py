"""A sweep on a real two-node Ray cluster: results stream back to a driver of bounded memory.

Two Ray nodes (``ray.cluster_utils.Cluster``: two raylets, each with its own object store, on
this machine) of one CPU each. The tasks are given a run's key and scenario only, never a path:
their tables come back as objects and the driver writes each run as it arrives, so the cluster
needs no shared file system. The summary must equal the local backend's, both nodes must have
simulated runs, and while 10³ runs of about 0.3 MB each stream in, the driver keeps a bounded
window of tasks submitted and its memory does not grow with the runs.
"""

import bisect
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from desim.errors import InputError  # noqa: E402
from desim.experiments.sweep import execute, run_sweep  # noqa: E402
from desim.experiments.sweep_backends import _runtime_env_variable, ray_backend  # noqa: E402
from desim.experiments.sweep_spec import expand, load_sweep_spec  # noqa: E402
from desim.experiments.sweep_store import RunOutcome, completed_keys  # noqa: E402

TINY = """
name = "two-nodes"
seeds = [0, 1, 2, 3]
[set]
"run.rounds" = 1
"devices.population.count" = 12
[grid]
"server.aggregation_s" = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
[[allocators]]
name = "greedy"
"""
PACKAGE = Path(__file__).resolve().parents[1] / "desim"
STREAMED = 1000
PAYLOAD_BYTES = 300_000  # per run: 0.3 GB streams through the driver in all


@pytest.fixture(scope="module")
def cluster():
    nodes = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    c = Cluster(initialize_head=True, head_node_args={**nodes, "include_dashboard": False})
    c.add_node(**nodes)
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def tiny_runs(tmp_path: Path):
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY)
    return expand(*load_sweep_spec(spec))


def comparable(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.drop(columns=[c for c in summary.columns if "wall" in c])


def node_of(out: Path, key: str) -> str:
    return json.loads((out / "runs" / key / "run.json").read_text())["ray_node_id"]


def test_a_sweep_across_two_nodes_equals_the_local_backend(cluster, tmp_path):
    runs = tiny_runs(tmp_path)
    assert len(runs) == 24
    local = run_sweep(runs, tmp_path / "local", workers=1)
    remote = run_sweep(runs, tmp_path / "ray", backend="ray", address=cluster.address)
    assert remote.succeeded == local.succeeded == 24 and remote.failed == 0
    pd.testing.assert_frame_equal(comparable(pd.read_parquet(local.summary_path)),
                                  comparable(pd.read_parquet(remote.summary_path)))
    key = runs[7].key
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "local" / "runs" / key / "device_rounds.parquet"),
        pd.read_parquet(tmp_path / "ray" / "runs" / key / "device_rounds.parquet"),
    )
    nodes = {node_of(tmp_path / "ray", r.key) for r in runs}
    assert nodes == {n.node_id for n in cluster.list_all_nodes()}  # both nodes simulated runs
    assert not ray.is_initialized()  # the sweep disconnected; the cluster runs on


def streamed_simulate(base: RunOutcome, payload_bytes: int):
    """A task that returns a stored outcome with a payload, stamped with its start time."""

    def simulate(key: str, scenario_json: dict) -> RunOutcome:
        started = time.time()
        import desim

        meta = {**base.metadata, "payload": "x" * payload_bytes, "task_started": started,
                "task_pid": os.getpid(), "mark": os.environ.get("DESIM_TEST_MARK", ""),
                "desim_file": desim.__file__}
        return RunOutcome(key, tables=base.tables, metadata=meta)

    return simulate


def stored_fields(out: Path, runs) -> list[dict]:
    """What each stored run.json says about its task (without the payload)."""
    fields = []
    for r in runs:
        meta = json.loads((out / "runs" / r.key / "run.json").read_text())
        assert len(meta.pop("payload")) == PAYLOAD_BYTES
        fields.append({k: meta[k] for k in ("task_started", "task_pid", "mark", "ray_node_id",
                                            "desim_file")})
    return fields


def _rss_bytes() -> int:
    """This process's resident set size, from /proc (no psutil needed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_thousand_runs_stream_into_a_driver_of_bounded_memory(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Ray puts the driver's folder on the workers' sys.path
    one = tiny_runs(tmp_path)[0]
    base = execute(one.key, one.scenario.model_dump(mode="json"))
    runs = [replace(one, index=i, key=f"{i:04d}{one.key[4:]}") for i in range(STREAMED)]
    out = tmp_path / "stream"
    (out / "runs").mkdir(parents=True)
    source = ray_backend(runs, 1, cluster.address, out, out / ".staging" / "1",
                         streamed_simulate(base, PAYLOAD_BYTES),
                         runtime_env={"py_modules": [str(PACKAGE)],
                                      "env_vars": {"DESIM_TEST_MARK": "from-runtime-env"}})
    stored_at, rss = [], []
    for run, ok in source:
        assert ok and (out / "runs" / run.key / "run.json").is_file()  # written on arrival
        stored_at.append(time.time())
        rss.append(_rss_bytes())
    assert len(stored_at) == STREAMED and len(completed_keys(out)) == STREAMED
    # the driver holds no result once stored: far less growth than the 0.3 GB streamed
    growth = max(rss) - max(rss[:100])
    assert growth < 40 * 2**20, f"driver RSS grew {growth / 2**20:.0f} MiB"
    fields = stored_fields(out, runs)
    # the window: when the j-th run was stored, at most j - 1 + 2 x (2 CPUs) tasks had started
    starts = sorted(f["task_started"] for f in fields)
    for j, t in enumerate(stored_at, start=1):
        assert bisect.bisect_left(starts, t) <= j - 1 + 4
    # the runtime_env reached every task: its variable, and desim shipped by Ray, not installed
    assert {f["mark"] for f in fields} == {"from-runtime-env"}
    assert not any(Path(f["desim_file"]).is_relative_to(PACKAGE) for f in fields)
    assert {f["ray_node_id"] for f in fields} == {n.node_id for n in cluster.list_all_nodes()}
    assert os.getpid() not in {f["task_pid"] for f in fields}  # simulated in the workers


def test_the_runtime_env_variable_must_be_a_json_object(monkeypatch):
    monkeypatch.setenv("RAY_RUNTIME_ENV", '{"py_modules": ["desim"]}')
    assert _runtime_env_variable() == {"py_modules": ["desim"]}
    monkeypatch.setenv("RAY_RUNTIME_ENV", '["desim"]')
    with pytest.raises(InputError, match="RAY_RUNTIME_ENV: expected a JSON object"):
        _runtime_env_variable()
    monkeypatch.setenv("RAY_RUNTIME_ENV", "{py_modules")
    with pytest.raises(InputError, match="RAY_RUNTIME_ENV: not JSON"):
        _runtime_env_variable()
    monkeypatch.delenv("RAY_RUNTIME_ENV")
    assert _runtime_env_variable() is None
