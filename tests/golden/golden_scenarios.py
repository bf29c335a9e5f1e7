"""The golden-replay scenarios and how one is replayed (shared by the test and the generator)."""

from __future__ import annotations

import pandas as pd

from desim.engine.assembly import build_simulation
from desim.io.scenario import load_scenario

TABLES = ("rounds", "device_rounds", "fault_events")

SMALL = ["run.rounds=3", "devices.population.count=14"]

GOLDEN: dict[str, list[str]] = {
    "deft-crunch": [*SMALL, 'allocator.name="crunch"'],
    "deft-jbba": [*SMALL, 'allocator.name="jbba"'],
    "grouped-single-device": [*SMALL, 'allocator.name="single-device"'],
    "offload": [*SMALL, 'scheme.name="offload"'],
    "fl-lora": [*SMALL, 'scheme.name="fl-lora"', "scheme.clients=6",
                'scheme.selection="random"'],
    "dlora": [*SMALL, 'scheme.name="dlora"'],
    "faults-deadline": ["run.rounds=4", 'allocator.name="crunch"', "faults.dropout_rate=0.1",
                        'run.straggler_policy="deadline"', "run.deadline_s=2.2",
                        "faults.upload_timeout_s=2.0", 'run.on_infeasible="skip"'],
}


def replay(overrides: list[str]) -> dict[str, pd.DataFrame]:
    """The tables of one golden scenario, as the CSV writer would store them."""
    result = build_simulation(load_scenario(None, overrides)).run()
    tables = result.tables()
    return {name: tables[name] for name in TABLES}
