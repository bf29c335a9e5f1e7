"""DLoRA replays a Kill-and-Revive score file (the profiler's measured gradient-norm proxy)."""

from __future__ import annotations

import numpy as np
import pytest

from desim.engine.assembly import build_simulation
from desim.errors import InputError
from desim.io.calibration import read_kr_scores, resolve_kr_scores_path
from desim.io.scenario import load_scenario
from desim.schemes.kill_revive import KillRevive

SHIPPED = "shipped:kr-scores_roberta-base.csv"
DLORA = ['scheme.name="dlora"', 'scheme.kr_score="trace"', "run.rounds=12"]


def test_dlora_kill_and_revive_follows_the_shipped_measured_scores():
    sc = load_scenario(None, [*DLORA, f'scheme.kr_scores="{SHIPPED}"'])
    result = build_simulation(sc).run()
    seen = [d["active_modules"] for d in result.metadata["scheme_diagnostics"]]
    # replay the same policy on the file's rows: every device sees the same scores
    scores = read_kr_scores(resolve_kr_scores_path(SHIPPED))
    policy = KillRevive()  # the scenario defaults: threshold 1, patience 2, revival every 10
    state = policy.new_state(1, scores.shape[1])
    expected = []
    for r in range(12):
        expected.append(int(policy.active_for(state, r)[0].sum()))
        policy.observe(state, np.array([0]), scores[r % len(scores)][None, :])
    assert [int(round(np.mean(a))) for a in seen] == expected
    assert all(len(set(a)) == 1 for a in seen)
    assert min(expected) < scores.shape[1]  # the measured scores let KR kill something


def test_inline_rows_and_files_give_the_same_run(tmp_path):
    rows = read_kr_scores(resolve_kr_scores_path(SHIPPED))
    inline = "[" + ",".join("[" + ",".join(repr(float(v)) for v in r) + "]" for r in rows) + "]"
    a = build_simulation(load_scenario(None, [*DLORA, f'scheme.kr_scores="{SHIPPED}"'])).run()
    b = build_simulation(load_scenario(None, [*DLORA, f"scheme.kr_scores={inline}"])).run()
    assert a.rounds_frame()["latency_s"].tolist() == b.rounds_frame()["latency_s"].tolist()


def test_score_rows_must_match_the_models_modules():
    sc = load_scenario(None, [*DLORA, "scheme.kr_scores=[[1.0, 2.0]]"])
    with pytest.raises(InputError, match="24 LoRA modules.*has 2"):
        build_simulation(sc)
    sc = load_scenario(None, [*DLORA, 'scheme.kr_scores="shipped:missing.csv"'])
    with pytest.raises(InputError, match="kr-scores_roberta-base.csv"):
        build_simulation(sc)


@pytest.mark.parametrize("method", ["adapter", "ia3", "full", "mezo"])
def test_dlora_needs_a_lora_method_trained_by_backpropagation(method):
    from desim.errors import ScenarioError

    sc = load_scenario(None, ['scheme.name="dlora"', f'model.method="{method}"'])
    with pytest.raises(ScenarioError, match=f"model.method: dlora.*got '{method}'"):
        build_simulation(sc)
