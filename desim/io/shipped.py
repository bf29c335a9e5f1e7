"""The data shipped inside the package (``desim/data``), found by name.

The default scenario, model configs, profiles, traces and Kill-and-Revive score files. A
scenario names a shipped trace or score file as ``shipped:NAME`` (:data:`SHIPPED_PREFIX`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_SCENARIO = "default.toml"
SHIPPED_PREFIX = "shipped:"


def data_file(*parts: str) -> Path:
    """Path of a file or folder under the package's ``data`` folder."""
    return Path(str(resources.files("desim").joinpath("data", *parts)))


def default_scenario_path() -> Path:
    """Path of the built-in default scenario shipped inside the package."""
    return data_file(DEFAULT_SCENARIO)


def shipped_models() -> list[str]:
    """Names of the model configs shipped with desim."""
    return sorted(p.stem for p in data_file("models").iterdir() if p.suffix == ".json")


def shipped_profiles() -> list[Path]:
    """Profile CSVs shipped with desim (``desim/data/profiles``)."""
    folder = data_file("profiles")
    return sorted(folder.glob("*.csv")) if folder.is_dir() else []


def shipped_traces() -> list[str]:
    """Names of the trace files shipped with desim (``shipped:NAME`` in a scenario)."""
    folder = data_file("traces")
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".csv", ".parquet"))


def shipped_kr_scores() -> list[str]:
    """Names of the Kill-and-Revive score files shipped with desim (``desim/data/kr-scores``)."""
    folder = data_file("kr-scores")
    return sorted(p.name for p in folder.glob("*.csv")) if folder.is_dir() else []
