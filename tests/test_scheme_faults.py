"""Faults in fl-lora and dlora rounds: lost participants, FedAvg over the survivors, deadlines.

Uses the two-device tiny scenario of tests/test_schemes.py, whose fault-free fl-lora round is
stated there exactly: with E = 2, A computes 4 s and uploads 1 s (ends at 5 s), B computes 8 s
and uploads 1 s (9 s); FedAvg takes 0.1 s; the broadcast takes 1 s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from desim.engine.faults import FaultModel
from desim.scenario.model import FaultsSpec, RunSpec
from desim.schemes.dlora import DLoRAScheme
from desim.schemes.fl_lora import FedLoRAScheme
from tests.test_schemes import tiny


def with_faults(sim, spec: FaultsSpec, policy: RunSpec | None = None):  # type: ignore[no-untyped-def]
    faults = FaultModel(spec, {"A": 0, "B": 1}, np.random.default_rng(0))
    return dataclasses.replace(sim, faults=faults, policy=policy or sim.policy)


def test_an_outage_mid_training_drops_the_client_from_fedavg_and_the_broadcast():
    spec = FaultsSpec(events=({"device": "B", "time_s": 3.0, "duration_s": 1.0},))
    result = with_faults(tiny(FedLoRAScheme(local_steps=2)), spec).run()
    r = result.rounds_frame().iloc[0]
    # the server sees B's link drop at 3 s; A's upload ends at 5 s: barrier at 5 s, FedAvg
    # 0.1 s, then the broadcast to A alone (1 s)
    assert r.latency_s == pytest.approx(6.1, abs=1e-9)
    assert r.dropouts == 1
    dev = result.device_rounds_frame().set_index("device")
    assert dev.outcome.tolist() == ["done", "outage"]
    assert dev.compute_busy_s.tolist() == pytest.approx([4.0, 3.0])
    assert dev.upload_bits.tolist() == [2e6, 0.0]  # B never uploads
    assert dev.download_bits.tolist() == [2e6, 0.0]  # nor gets the average
    assert dev.samples.tolist() == [2.0, 0.0]  # E = 2 steps of b = 1; B's work is lost
    assert dev.loc["B", "flops"] == 0.0
    ev = result.fault_events_frame().iloc[0]
    assert (ev.device, ev.kind, ev.time_s, ev.lost_s) == ("B", "outage", 3.0, 3.0)
    assert result.metadata["scheme_diagnostics"][0]["fedavg_weights"] == [1.0, 0.0]


def test_a_deadline_drops_the_straggler_and_the_round_waits_only_until_it():
    policy = RunSpec(rounds=1, straggler_policy="deadline", deadline_s=6.0)
    result = with_faults(tiny(FedLoRAScheme(local_steps=2)), FaultsSpec(), policy).run()
    r = result.rounds_frame().iloc[0]
    assert r.latency_s == pytest.approx(6.0 + 0.1 + 1.0, abs=1e-9)
    dev = result.device_rounds_frame().set_index("device")
    assert dev.outcome.tolist() == ["done", "deadline"]
    assert dev.loc["B", "compute_busy_s"] == pytest.approx(6.0)


def test_a_client_lost_during_the_broadcast_still_counts():
    # B's upload ends at 9 s, so its update is averaged; it drops at 9.5 s, mid-broadcast
    spec = FaultsSpec(events=({"device": "B", "time_s": 9.5, "duration_s": 1.0},))
    result = with_faults(tiny(FedLoRAScheme(local_steps=2)), spec).run()
    dev = result.device_rounds_frame().set_index("device")
    assert dev.outcome.tolist() == ["done", "outage"]
    assert dev.samples.tolist() == [2.0, 2.0]
    assert dev.download_bits.tolist() == [2e6, 0.0]
    assert result.rounds_frame().latency_s.iloc[0] == pytest.approx(10.1, abs=1e-9)
    assert result.metadata["scheme_diagnostics"][0]["fedavg_weights"] == [0.5, 0.5]
    assert result.fault_events_frame().lost_s.tolist() == [0.0]  # no training was lost


def test_every_dlora_participant_dropping_loses_the_whole_round():
    sim = with_faults(tiny(DLoRAScheme(kill_revive=None), rounds=2), FaultsSpec(dropout_rate=1.0))
    result = sim.run()
    rounds = result.rounds_frame()
    assert rounds.dropouts.tolist() == [2, 2]
    assert rounds.samples.sum() == 0.0 and rounds.flops.sum() == 0.0
    free = tiny(DLoRAScheme(kill_revive=None), rounds=2).run().rounds_frame()
    assert (rounds.latency_s < free.latency_s).all()  # each drops part-way through
