"""Regenerate the golden replays (run from the repository root: python tests/golden/make_golden.py).

Each scenario is the built-in default with a few overrides: small, but through every path of the
engine (DEFT with crunch and jbba, grouped, offload, fl-lora, dlora, faults with a deadline). The
tables are compared exactly by tests/test_golden.py; regenerate only for a change that is meant
to alter results, and say so in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import json  # noqa: E402

from golden_scenarios import GOLDEN, TABLES, library_versions, replay  # noqa: E402


def main() -> None:
    for name, overrides in GOLDEN.items():
        tables = replay(overrides)
        folder = HERE / name
        folder.mkdir(exist_ok=True)
        for table in TABLES:
            tables[table].to_csv(folder / f"{table}.csv", index=False, float_format="%.17g")
        print(name, {t: len(tables[t]) for t in TABLES})
    # the fixtures are byte-exact on these versions (tests/test_golden.py)
    (HERE / "versions.json").write_text(json.dumps(library_versions(), indent=1) + "\n")


if __name__ == "__main__":
    main()
