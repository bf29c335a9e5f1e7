"""What the planner knows of the channel (allocator.csi): each mode against its definition."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from desim.engine.csi import EWMA_FRACTION, Csi, planner_view
from desim.experiments.sweep_spec import expand, load_sweep_spec
from desim.world.channel import SignalChannel
from desim.world.piecewise import PiecewiseSignals
from tests.helpers import tiny_simulation

TIMES = np.array([0.0, 0.5, 1.2, 1.7, 2.6, 3.0, 3.9])
VALUES = np.array([[3e6, 1e6, 8e6, 2e6, 5e6, 1e5, 4e6],
                   [15e6, 9e6, 30e6, 12e6, 1e6, 20e6, 7e6],
                   [15e6, 15e6, 15e6, 15e6, 15e6, 15e6, 15e6]])


def _channel() -> SignalChannel:
    return SignalChannel(PiecewiseSignals(TIMES, VALUES, 4.5, "loop"))


def _fine(start: float, end: float, n: int = 400_000) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints of a fine grid over ``[start, end)`` and the signal there ``(K, n)``."""
    t = start + (np.arange(n) + 0.5) * (end - start) / n
    sig = _channel().signals
    return t, np.stack([sig.at(x) for x in t[:: n // 4000]], axis=1)


def _view(mode: str, t: float = 3.4, window: float = 2.0):
    sim = tiny_simulation(channel=_channel())
    ctx = sim.context(0, t)
    return ctx, planner_view(ctx, sim.channel, t, Csi(mode, window), sim.world)


def test_snapshot_is_the_round_start_value_unchanged():
    ctx, view = _view("snapshot")
    assert view is ctx and view.rate is None
    np.testing.assert_array_equal(view.snr_coef_hz, _channel().signals.at(3.4))


def test_large_scale_of_a_trace_is_the_past_window_mean():
    _, view = _view("large-scale", 3.4, 2.0)
    _, samples = _fine(1.4, 3.4)
    np.testing.assert_allclose(view.snr_coef_hz, samples.mean(axis=1), rtol=2e-3)
    assert view.csi == "large-scale"


def test_predicted_is_the_ewma_of_the_log_snr():
    _, view = _view("predicted", 3.4, 2.0)
    t, samples = _fine(1.4, 3.4)
    t = t[:: t.size // samples.shape[1]][: samples.shape[1]]
    w = np.exp(-(3.4 - t) / (EWMA_FRACTION * 2.0))
    expect = np.exp((np.log(samples) * w).sum(axis=1) / w.sum())
    np.testing.assert_allclose(view.snr_coef_hz, expect, rtol=5e-3)


def test_the_first_round_has_no_past_and_sees_the_snapshot():
    ctx, view = _view("large-scale", 0.0)
    np.testing.assert_array_equal(view.snr_coef_hz, ctx.snr_coef_hz)


def test_ergodic_on_a_trace_is_the_mean_rate_over_the_past_window():
    _, view = _view("ergodic", 3.4, 2.0)
    _, samples = _fine(1.4, 3.4)
    bw = np.array([0.5e6, 1e6, 2e6])
    expect = (bw[:, None] * np.log2(1 + samples / bw[:, None])).mean(axis=1)
    got = view.rates.rate_bps(bw, np.arange(3))
    np.testing.assert_allclose(got, expect, rtol=2e-3)


def test_oracle_sees_the_future_window_and_the_true_world():
    sim = tiny_simulation(channel=_channel())
    ctx = sim.context(0, 1.0)
    view = planner_view(ctx, sim.channel, 1.0, Csi("oracle", 1.5), sim.world)
    assert view.future is sim.world
    _, samples = _fine(1.0, 2.5)
    bw = np.full(3, 1e6)
    expect = (bw[:, None] * np.log2(1 + samples / bw[:, None])).mean(axis=1)
    np.testing.assert_allclose(view.rates.rate_bps(bw, np.arange(3)), expect, rtol=2e-3)


def test_a_generated_channel_knows_its_large_scale_part():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    sc = load_scenario(None, ["channel.kind=rayleigh", "channel.coherence_s=0.05",
                              "allocator.csi=large-scale", "run.rounds=1"])
    sim = build_simulation(sc)
    ctx = sim.context(0, 1.0)
    np.testing.assert_array_equal(ctx.snr_coef_hz, sim.channel.large_scale.at(1.0))
    assert not np.array_equal(ctx.snr_coef_hz, sim.channel.signals.at(1.0))


def test_an_unknown_mode_is_refused():
    with pytest.raises(Exception, match="csi"):
        Csi("genie")


def test_run_json_records_the_mode(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "desim.cli", "run", "--set", "run.rounds=2", "--set",
         "allocator.csi=predicted", "--set", "allocator.csi_window_s=1.5", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["csi"] == {"mode": "predicted", "window_s": 1.5}
    assert meta["scenario"]["allocator"]["csi"] == "predicted"


def test_a_bad_mode_in_a_scenario_exits_2_naming_the_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "desim.cli", "run", "--set", "allocator.csi=genie",
         "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "allocator.csi" in proc.stderr and "Traceback" not in proc.stderr


def test_a_sweep_keeps_csi_beside_the_allocators(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(
        'name = "s"\nbase = "default"\nseeds = [0]\n[set]\n"allocator.csi" = "ergodic"\n'
        '[grid]\n"allocator.csi_window_s" = [1.0, 2.0]\n[[allocators]]\nname = "jbba"\n'
        '[[allocators]]\nname = "crunch"\ncsi = "oracle"\n')
    runs = expand(*load_sweep_spec(spec))
    got = [(r.allocator, r.scenario.allocator.csi, r.scenario.allocator.csi_window_s)
           for r in runs]
    assert got == [("jbba", "ergodic", 1.0), ("crunch", "oracle", 1.0),
                   ("jbba", "ergodic", 2.0), ("crunch", "oracle", 2.0)]
    assert len({r.key for r in runs}) == 4  # the mode and window are part of a run's key


def test_every_mode_runs_the_engine_with_every_paper_allocator():
    for mode in ("snapshot", "large-scale", "ergodic", "predicted", "oracle"):
        for alloc in ("crunch", "jbba", "jbba-exact", "greedy"):
            sim = tiny_simulation(channel=_channel(), allocator=alloc, rounds=3)
            sim = replace(sim, csi=Csi(mode, 1.0))
            res = sim.run()
            assert len(res.rounds) == 3


def test_run_oracle_bound_records_each_round_s_exact_bound():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    sc = load_scenario(None, ["run.rounds=3", "run.oracle_bound=true", "allocator.name=jbba"])
    rounds = build_simulation(sc).run().tables()["rounds"]
    assert (rounds.latency_s >= rounds.oracle_bound_s * (1 - 1e-9)).all()
    assert np.isfinite(rounds.oracle_bound_s).all()
    plain = build_simulation(load_scenario(None, ["run.rounds=1"])).run().tables()["rounds"]
    assert "oracle_bound_s" not in plain.columns  # only when asked for


def test_run_oracle_bound_is_refused_for_a_scheme_other_than_deft():
    from desim.engine.assembly import build_simulation
    from desim.errors import ScenarioError
    from desim.io.scenario import load_scenario

    sc = load_scenario(None, ["run.rounds=1", "run.oracle_bound=true", "scheme.name=fl-lora"])
    with pytest.raises(ScenarioError, match="run.oracle_bound"):
        build_simulation(sc).run()
