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


def library_versions() -> dict[str, str]:
    """The numeric libraries, and numpy's SIMD targets, whose last-bit rounding the fixtures
    depend on (numpy's sums dispatch on the CPU: AVX-512 and AVX2 round some differently)."""
    import platform

    import numpy
    import scipy
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    simd = ",".join(t for t in __cpu_dispatch__ if __cpu_features__.get(t))
    return {"python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "pandas": pd.__version__, "numpy_simd": simd}


def same_up_to_rounding(expected: pd.DataFrame, got: pd.DataFrame, rtol: float = 1e-12) -> str:
    """``""`` when the tables agree (non-float columns exactly, floats to ``rtol``), else why.

    A numpy or scipy release may change the last bits of ``exp``, ``pow`` or a sum; the fixtures
    are byte-exact on the versions that wrote them (``versions.json``) and this close elsewhere.
    """
    import numpy as np

    if list(expected.columns) != list(got.columns) or len(expected) != len(got):
        return f"columns or rows differ: {list(expected.columns)} vs {list(got.columns)}"
    for col in expected.columns:
        a, b = expected[col], got[col]
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            x, y = a.to_numpy(float), b.to_numpy(float)
            if not np.allclose(x, y, rtol=rtol, atol=0.0, equal_nan=True):
                return f"column {col} differs beyond rounding"
        elif not a.equals(b):
            return f"column {col} differs"
    return ""
