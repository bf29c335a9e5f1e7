"""Issue 12: every bad input is refused with one clear line, or warned about by name.

Each case goes through the CLI (:func:`desim.cli.main.main`, in process, or ``python -m
desim.cli.main``)
and checks the exit code, that no traceback or "internal error" is shown, and that the message
names the key, the file or the block. Warnings are checked through the CLI (one ``warning:``
line) and at the library level (:class:`~desim.errors.DesimWarning`). Scenarios are tiny:
two blocks on three devices priced by the analytic model, or the default scenario refused
before it runs.
"""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from desim.cli.main import main
from desim.engine.assembly import build_simulation
from desim.errors import DesimWarning
from desim.io.scenario import load_scenario
from desim.io.shipped import shipped_profiles

# two blocks (roberta-base, b=1, s=16, analytic): block 1 needs 5.04e8 bytes, block 2 5.09e8,
# so only d0 can train block 2 and only d0 can take part in fl-lora
TINY = """
[model]
name = "roberta-base"
method = "lora"
batch_size = 1
seq_len = 16
num_blocks = 2

[[devices.list]]
name = "d0"
memory_bytes = 2e9
tx_power_dbm = {tx_power}

[[devices.list]]
name = "d1"
memory_bytes = 5.05e8

[[devices.list]]
name = "d2"
memory_bytes = 5.05e8

[channel]
kind = "static"

[compute]
kind = "constant"

[cost]
model = "analytic"

[allocator]
name = "greedy"

[run]
rounds = 2
"""

POWER_TYPO = [f"power.cpu-refrence.{k}={v}" for k, v in (
    ("compute_w", 5), ("transmit_w", 2), ("receive_w", 1), ("idle_w", 1),
    ("peak_flops_per_s", 1e11),
)]


def tiny(tmp_path: Path, tx_power: float = 23.0, extra: str = "") -> Path:
    """The tiny scenario as a file (one file per content, so cases never share one)."""
    text = TINY.format(tx_power=tx_power) + extra
    path = tmp_path / f"tiny-{hashlib.sha1(text.encode()).hexdigest()[:8]}.toml"
    path.write_text(text)
    return path


def trace(tmp_path: Path, name: str, rows: list[tuple[str, float, float]],
          column: str = "gain_db", extra: str = "") -> Path:
    path = tmp_path / name
    body = "".join(f"{d},{t},{v}{extra and ',' + extra}\n" for d, t, v in rows)
    path.write_text(f"device,time_s,{column}{extra and ',ref_bandwidth_hz'}\n{body}")
    return path


def profile(tmp_path: Path, name: str, edit) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the shipped roberta-base LoRA profile, its rows changed by ``edit``."""
    src = next(p for p in shipped_profiles() if p.name == "cpu-reference_roberta-base_lora.csv")
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = edit(rows)
    path = tmp_path / name
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def zero_times(rows):  # type: ignore[no-untyped-def]
    for r in rows:
        for c in ("fwd_s", "bwd_s", "step_s", "compute_s"):
            r[c] = "0"
    return rows


def drop_block_7(rows):  # type: ignore[no-untyped-def]
    return [r for r in rows if r["block"] != "7"]


def faster_block_5(rows):  # type: ignore[no-untyped-def]
    """Block 5 at b=8, s=128 measured at half of block 4's time, far beyond the spread."""
    at = {r["block"]: r for r in rows if (r["batch_size"], r["seq_len"]) == ("8", "128")}
    at["5"]["compute_s"] = str(float(at["4"]["compute_s"]) / 2)
    return rows


def run_cli(capsys, tmp_path: Path, scenario: Path | None, *sets: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    argv = ["run", *([str(scenario)] if scenario else []), "--rounds", "1",
            "--out", str(tmp_path / "out")]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "Traceback" not in text and "internal error" not in text, text
    return code, cap.err


# --- A. overflow and degenerate values: exit 2 naming the key, file, column and line ----------


def a_cases(tmp_path: Path) -> dict[str, tuple[Path | None, list[str], int, list[str]]]:
    """name -> (scenario, --set values, exit code, texts the message must contain)."""
    gain = trace(tmp_path, "gain.csv", [("d0", 0, -80), ("d0", 1, 5000), ("d1", 0, -90)])
    snr = trace(tmp_path, "snr.csv", [("d0", 0, 10), ("d0", 1, 5000)], "snr_db", "1e6")
    zero = profile(tmp_path, "zero.csv", zero_times)
    return {
        "tx-power-population": (
            None, ["devices.population.tx_power_dbm=1e300"], 2,
            ["devices.population.tx_power_dbm", "1e+300"],
        ),
        "tx-power-list": (tiny(tmp_path, tx_power=1e300), [], 2, ["devices.list.0.tx_power_dbm"]),
        "gain-db-overflow": (
            tiny(tmp_path), ['channel.kind="trace"', f'channel.path="{gain}"'], 2,
            [f"{gain} line 3", "gain_db 5000 dB"],
        ),
        "snr-db-overflow": (
            tiny(tmp_path), ['channel.kind="trace"', f'channel.path="{snr}"'], 2,
            [f"{snr} line 3", "snr_db 5000 dB"],
        ),
        "noise-psd-underflow": (
            tiny(tmp_path), ["server.noise_psd_dbm_per_hz=-1e300"], 2,
            ["server.noise_psd_dbm_per_hz", "greater than or equal to -300"],
        ),
        "profile-zero-times": (
            None, [f'cost.profiles.cpu-reference="{zero}"'], 2,
            [f"{zero}: line 2: column compute_s", "positive"],
        ),
    }


@pytest.mark.parametrize("case", [
    "tx-power-population", "tx-power-list", "gain-db-overflow", "snr-db-overflow",
    "noise-psd-underflow", "profile-zero-times",
])
def test_overflow_and_degenerate_values_are_refused_by_name(capsys, tmp_path, case):
    scenario, sets, expected, texts = a_cases(tmp_path)[case]
    code, err = run_cli(capsys, tmp_path, scenario, *sets)
    assert code == expected, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for text in texts:
        assert text in lines[0]


def test_overflowing_tx_power_through_python_m_desim_cli(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "desim.cli", "run", "--rounds", "1", "--out", str(tmp_path),
         "--set", "devices.population.tx_power_dbm=1e300"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "error: devices.population.tx_power_dbm" in proc.stderr and "1e+300" in proc.stderr


# --- B. the right reason ---------------------------------------------------------------------


def test_profile_missing_a_block_names_the_block_and_the_file(capsys, tmp_path):
    path = profile(tmp_path, "no7.csv", drop_block_7)
    code, err = run_cli(capsys, tmp_path, None, f'cost.profiles.cpu-reference="{path}"')
    assert code == 2, err
    assert f"error: {path}: block 7 missing" in err
    assert "rate stays zero" not in err


def test_reassignment_after_a_dropout_names_the_real_block(capsys, tmp_path):
    # d0 (the only device that holds block 2) goes offline during its compute; d1 and d2
    # cannot hold block 2, so the lost block cannot be reassigned
    scenario = tiny(tmp_path, extra='\n[faults]\nevents = [{device = "d0", time_s = 0.01}]\n')
    code, err = run_cli(capsys, tmp_path, scenario)
    assert code == 3, err
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    detail = line.split("cannot be reassigned: ", 1)[1]
    assert re.search(r"\bblock 2\b", detail) and not re.search(r"\bblock 1\b", detail), line
    assert line.startswith("error: round 0: block 2 lost its device and cannot be reassigned")


# --- C. suspicious but valid input: one warning naming the key --------------------------------


def c_cases(tmp_path: Path) -> dict[str, tuple[Path | None, list[str], list[str]]]:
    """name -> (scenario, --set values, texts the warning must contain)."""
    up = trace(tmp_path, "up.csv", [("d0", 0, 3.5), ("d1", 0, -80), ("d2", 0, -90),
                                    ("d0", 1, -70), ("d1", 1, -80), ("d2", 1, -90)])
    one = trace(tmp_path, "one.csv", [("d0", 0, -70), ("d0", 1, -80)])
    down = profile(tmp_path, "down.csv", faster_block_5)
    return {
        "deadline-under-wait-all": (tiny(tmp_path), ["run.deadline_s=5"], ["run.deadline_s"]),
        "fl-lora-clients": (
            tiny(tmp_path), ['scheme.name="fl-lora"', 'scheme.selection="random"',
                             "scheme.clients=5"],
            ["scheme.clients = 5", "only 1 of the 3 devices"],
        ),
        "unused-power-class": (
            tiny(tmp_path), POWER_TYPO, ["power.cpu-refrence", "in use: cpu-reference"],
        ),
        "gain-above-0-db": (
            tiny(tmp_path), ['channel.kind="trace"', f'channel.path="{up}"'],
            [f"{up}: column gain_db reaches 3.5 dB"],
        ),
        "profile-decreases-with-depth": (
            None, [f'cost.profiles.cpu-reference="{down}"'],
            [f"{down}: column compute_s decreases with depth at block(s) 5"],
        ),
        "one-device-trace-cyclic": (
            tiny(tmp_path), ['channel.kind="trace"', f'channel.path="{one}"'],
            ["channel.path", "channel.mapping = 'cyclic'", "all 3 devices get the same signal"],
        ),
    }


C_CASES = ["deadline-under-wait-all", "fl-lora-clients", "unused-power-class", "gain-above-0-db",
           "profile-decreases-with-depth", "one-device-trace-cyclic"]


@pytest.mark.parametrize("case", C_CASES)
def test_suspicious_input_warns_by_name_through_the_cli(capsys, tmp_path, case):
    scenario, sets, texts = c_cases(tmp_path)[case]
    code, err = run_cli(capsys, tmp_path, scenario, *sets)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 1, err
    for text in texts:
        assert text in lines[0]


@pytest.mark.parametrize("case", C_CASES)
def test_suspicious_input_warns_by_name_in_the_library(tmp_path, case):
    scenario, sets, texts = c_cases(tmp_path)[case]
    with pytest.warns(DesimWarning, match=re.escape(texts[0])):
        build_simulation(load_scenario(scenario, sets))


def test_default_scenario_and_tiny_scenario_warn_about_nothing(capsys, tmp_path):
    code, err = run_cli(capsys, tmp_path, None)
    assert code == 0 and "warning" not in err, err
    with warnings.catch_warnings():
        warnings.simplefilter("error", DesimWarning)
        build_simulation(load_scenario(tiny(tmp_path)))
