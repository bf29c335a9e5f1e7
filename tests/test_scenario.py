import numpy as np
import pytest

from desim.engine.assembly import build_simulation, devices_of
from desim.engine.records import WALL_CLOCK_COLUMNS
from desim.errors import InputError, ScenarioError
from desim.io.outputs import write_results
from desim.io.scenario import load_scenario


def test_default_scenario_has_documented_shape():
    s = load_scenario()
    devices = devices_of(s)
    assert len(devices) == 20
    assert s.model.name == "roberta-base" and s.model.method == "lora"
    assert s.model.num_blocks == 12
    assert s.server.total_bandwidth_hz == 20e6
    assert len({d.name for d in devices}) == 20


def test_population_is_deterministic_in_its_seed():
    a = devices_of(load_scenario())
    b = devices_of(load_scenario())
    c = devices_of(load_scenario(None, ["devices.population.seed=1"]))
    assert a == b and a != c


@pytest.mark.parametrize(
    "override, fragment",
    [
        (
            "server.total_bandwidth_hz=-1",
            "server.total_bandwidth_hz: Input should be greater than 0",
        ),
        ("server.bogus=1", "server.bogus: unknown key"),
        ("model.batch_size='x'", "model.batch_size"),
        ("allocator.name='nope'", "unknown allocator 'nope'; known: "),
        ("allocator.speed=3", "allocator.speed: unknown parameter of 'greedy'"),
        ("allocator.bandwidth='weird'", "unknown bandwidth split 'weird'"),
        (
            "devices.population.speed_factor={dist='uniform', low=2, high=1}",
            "high (1.0) must be >= low",
        ),
        ("run.rounds=0", "run.rounds"),
    ],
)
def test_bad_values_name_the_field(override, fragment):
    with pytest.raises(ScenarioError, match="default scenario") as exc:
        load_scenario(None, [override])
    assert fragment in str(exc.value)


def test_nan_is_rejected():
    with pytest.raises(ScenarioError, match="server.aggregation_s"):
        load_scenario(None, ["server.aggregation_s=nan"])


def test_unknown_file_and_bad_toml(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(InputError, match=r"bad.toml: invalid TOML.*line 1"):
        load_scenario(bad)


def test_explicit_device_list(tmp_path):
    path = tmp_path / "s.toml"
    devices = "\n".join(
        f'[[devices.list]]\nname = "d{i}"\nspeed_factor = {1 + i}\nmemory_bytes = 4e9\n'
        for i in range(12)
    )
    path.write_text(devices + "\n[run]\nrounds = 3\n")
    s = load_scenario(path)
    assert [d.name for d in devices_of(s)][:2] == ["d0", "d1"]
    assert len(build_simulation(s).run().rounds) == 3


def _frames(seed, allocator="greedy"):
    s = load_scenario(None, [f"run.seed={seed}", "run.rounds=15", f'allocator.name="{allocator}"'])
    sim = build_simulation(s)
    res = sim.run()
    return sim, res.rounds_frame().drop(columns=list(WALL_CLOCK_COLUMNS)), res.device_rounds_frame()


def test_same_seed_gives_identical_tables():
    _, r1, d1 = _frames(3, "random")
    _, r2, d2 = _frames(3, "random")
    assert r1.equals(r2) and d1.equals(d2)
    _, r3, _ = _frames(4, "random")  # the random allocator draws from the seeded stream
    assert not r1.equals(r3)


def test_changing_the_allocator_keeps_the_channel_realisation():
    g, _, _ = _frames(5, "greedy")
    r, _, _ = _frames(5, "random")
    np.testing.assert_array_equal(g.channel.signals.values, r.channel.signals.values)


def test_results_are_written_with_run_json_last(tmp_path):
    s = load_scenario(None, ["run.rounds=4"])
    res = build_simulation(s).run()
    paths = write_results(res, tmp_path / "out")
    names = [p.name for p in paths]
    assert names[-1] == "run.json"
    assert {"rounds.parquet", "rounds.csv", "device_rounds.parquet", "device_rounds.csv"} <= set(
        names
    )
    import json

    import pandas as pd

    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["schema_version"] == 2 and meta["seed"] == 0
    assert meta["scenario"]["model"]["name"] == "roberta-base"
    assert len(pd.read_parquet(tmp_path / "out" / "rounds.parquet")) == 4
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.rouds=5", "run.rouds: unknown key (did you mean 'rounds'?)"),
        ("chanel.kind='rayleigh'", "chanel: unknown key (did you mean 'channel'?)"),
        ("devices.population.cont=4", "population.cont: unknown key (did you mean 'count'?)"),
        ("faults.dropout=0.1", "faults.dropout: unknown key (did you mean 'dropout_rate'?)"),
        ("allocator.name='crunch-mult'", "; did you mean 'crunch-multi'?"),
        ("allocator.bandwith='equal'", "(known: bandwidth; did you mean 'bandwidth'?)"),
        ("channel.kind='raleigh'", "; did you mean 'rayleigh'?"),
    ],
)
def test_a_misspelt_key_or_name_names_the_closest_known_one(override, message):
    with pytest.raises(ScenarioError) as exc:
        load_scenario(None, [override])
    assert message in str(exc.value)


@pytest.mark.parametrize("override", ["run.xyzzy=1", "allocator.name='zzzzzz'"])
def test_nothing_is_suggested_when_no_known_name_is_close(override):
    with pytest.raises(ScenarioError) as exc:
        load_scenario(None, [override])
    assert "did you mean" not in str(exc.value)


def test_a_misspelt_sweep_spec_key_names_the_closest_known_one(tmp_path):
    from desim.experiments.sweep_spec import load_sweep_spec

    spec = tmp_path / "s.toml"
    spec.write_text('name = "x"\nseed = [0]\n[[allocators]]\nname = "greedy"\n')
    with pytest.raises(InputError, match=r"s\.toml: seed: unknown key \(did you mean 'seeds'\?\)"):
        load_sweep_spec(spec)
