"""The CLI's conventions: the core install alone, usage errors, Ctrl-C, files and paths.

Each test goes through the command line (``desim.cli.main.main`` or a subprocess) the way a user
does.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from desim.cli.main import main
from desim.io.shipped import default_scenario_path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("torch", "transformers", "peft", "ray", "matplotlib", "click")

# Runs desim's CLI with the extras' packages (and the separately installed click) impossible to
# import, as on a core-only install: `pip install .` with no extras.
CORE_ONLY = f"""
import importlib.abc, sys
HIDDEN = {EXTRAS!r}

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden)", name=name)
        return None

sys.meta_path.insert(0, Hide())
for mod in [m for m in sys.modules if m.split(".")[0] in HIDDEN]:
    del sys.modules[mod]
from desim.cli.main import main
code = main(sys.argv[1:])
leaked = sorted({{m.split(".")[0] for m in sys.modules}} & set(HIDDEN))
assert not leaked, leaked
sys.exit(code)
"""


def core_only(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CORE_ONLY, *argv], capture_output=True, text=True, cwd=cwd,
        timeout=300,
    )


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean(out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert "internal error" not in out + err


# --- the core install ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rounds", "2", "--out", "r"],
        ["allocators"],
        ["sweep", str(ROOT / "experiments" / "smoke.toml"), "--out", "s", "--dry-run"],
        ["traces", "info", "shipped:compute-load-20dev.csv"],
    ],
    ids=["run", "allocators", "sweep-dry-run", "traces-info"],
)
def test_core_commands_need_no_extra(tmp_path, argv):
    proc = core_only(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)


def test_core_sweep_of_the_smoke_spec_runs(tmp_path):
    spec = tmp_path / "smoke.toml"
    spec.write_text(
        (ROOT / "experiments" / "smoke.toml").read_text().replace('"run.rounds" = 5',
                                                                  '"run.rounds" = 1')
    )
    proc = core_only("sweep", str(spec), "--out", "s", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "8 run, 0 already done, 0 failed of 8" in proc.stdout


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["figures", "a-devices"], 'pip install ".[plot]"'),
        (["traces", "plot", "shipped:compute-load-20dev.csv", "--out", "p.png"],
         'pip install ".[plot]"'),
        (["sweep", str(ROOT / "experiments" / "smoke.toml"), "--out", "s", "--backend", "ray"],
         'pip install ".[ray]"'),
        (["profile", "--model", "roberta-base", "--batch", "1", "--seq-len", "8", "--out",
          "p.csv"], 'pip install ".[profile]" "torch==2.13.0+cpu"'),
    ],
    ids=["figures", "traces-plot", "ray", "profile"],
)
def test_a_command_needing_an_extra_prints_the_exact_install_hint(tmp_path, argv, hint):
    proc = core_only(*argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert hint in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert_clean(proc.stdout, proc.stderr)


# --- usage errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "--alocator", "crunch"], "No such option: --alocator"),
        (["rnu"], "Did you mean 'run'?"),
        (["run", "--rounds", "abc"], "Invalid value for '--rounds'"),
        (["run", "--rounds"], "Option '--rounds' requires an argument"),
        (["sweep"], "Missing argument 'spec'"),
        ([], "missing command"),
    ],
    ids=["unknown-option", "unknown-command", "wrong-type", "missing-value", "missing-argument",
         "no-arguments"],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert err.count("\n") == 1, err
    assert_clean(out, err)


def test_an_unknown_option_suggests_the_right_one(capsys):
    code, _, err = run_cli(capsys, "run", "--alocator", "crunch")
    assert code == 2 and "--allocator" in err and "error:" in err


def test_the_entry_point_exits_2_on_a_typo(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "desim.cli", "run", "--alocator", "crunch"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "No such option" in proc.stderr
    assert_clean(proc.stdout, proc.stderr)


@pytest.mark.parametrize("value", ["[/oops]", "[bold]x[/bold]", "a]b[c"])
def test_a_value_that_looks_like_markup_is_printed_verbatim(capsys, tmp_path, value):
    code, out, err = run_cli(capsys, "run", "--set", f"allocator.name={value}", "--out",
                             str(tmp_path / "o"))
    assert code == 2
    assert repr(value) in err
    assert_clean(out, err)


# --- strict types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("run.rounds=true", "run.rounds"),
        ('devices.population.speed_factor="2"', "devices.population.speed_factor"),
        ('server.total_bandwidth_hz="20e6"', "server.total_bandwidth_hz"),
        ("model.batch_size=8.0", "model.batch_size"),
        ("channel.shadowing=1", "channel.shadowing"),
    ],
)
def test_no_silent_coercion(capsys, tmp_path, override, key):
    code, out, err = run_cli(capsys, "run", "--set", override, "--out", str(tmp_path / "o"))
    assert code == 2
    assert key in err
    assert_clean(out, err)


@pytest.mark.parametrize("override", ["allocator.iterations=true", 'allocator.tolerance="0.01"'])
def test_allocator_parameters_are_strict_too(capsys, tmp_path, override):
    code, out, err = run_cli(capsys, "run", "--allocator", "jbba", "--set", override, "--out",
                             str(tmp_path / "o"))
    assert code == 2 and override.split("=")[0] in err
    assert_clean(out, err)


def test_strict_types_in_a_scenario_file(capsys, tmp_path):
    scen = tmp_path / "s.toml"
    text = default_scenario_path().read_text().replace("rounds = 50", "rounds = true")
    scen.write_text(text)
    code, out, err = run_cli(capsys, "run", str(scen), "--out", str(tmp_path / "o"))
    assert code == 2 and f"{scen}: run.rounds" in err


# --- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_stops_desim_run_with_130_and_writes_nothing(tmp_path):
    out = tmp_path / "big"
    proc = subprocess.Popen(
        [sys.executable, "-m", "desim.cli", "run", "--rounds", "1000000", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        start_new_session=True,
    )
    time.sleep(4)  # imports, assembly and some rounds
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - sent < 5
    assert "interrupted" in stderr and "run the same command again" in stderr
    assert_clean(stdout, stderr)
    assert not out.exists()  # a run is written whole or not at all
    # the same command then completes (here shortened): nothing left over blocks it
    assert main(["run", "--rounds", "2", "--out", str(out)]) == 0


# --- result files ----------------------------------------------------------------------------


def test_result_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["run", "--rounds", "1", "--out", str(tmp_path / "r")]) == 0
    finally:
        os.umask(old)
    for f in (tmp_path / "r").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_default_folder_differs_per_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--rounds", "1"]) == 0
    assert main(["run", "--rounds", "1", "--set", "server.total_bandwidth_hz=10e6"]) == 0
    assert main(["run", "--rounds", "1"]) == 0  # the same configuration: the same folder
    folders = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert len(folders) == 2, folders
    assert all(f.startswith("default-greedy-seed0-") for f in folders)
    bandwidths = {
        json.loads((tmp_path / "results" / f / "run.json").read_text())["scenario"]["server"][
            "total_bandwidth_hz"
        ]
        for f in folders
    }
    assert bandwidths == {20e6, 10e6}


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--out", "{file}/sub"], "is a file, not a directory"),
        (["--out", "{file}"], "exists and is not a directory"),
        (["--trace-out", "{tmp}/missing/t.json"], "does not exist"),
        (["--trace-out", "{tmp}"], "is a directory, expected a file name"),
    ],
)
def test_outputs_are_checked_before_the_simulation(capsys, tmp_path, extra, fragment):
    file = tmp_path / "afile"
    file.write_text("")
    args = [a.format(file=file, tmp=tmp_path) for a in extra]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "r")]
    started = time.monotonic()
    code, out, err = run_cli(capsys, "run", "--rounds", "1000000", *args)
    assert code == 2 and fragment in err and args[1] in err
    assert time.monotonic() - started < 10  # refused before a million rounds were simulated
    assert not (tmp_path / "r").exists()
    assert_clean(out, err)


# --- paths in files --------------------------------------------------------------------------


def test_paths_in_a_scenario_resolve_from_its_folder(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    trace = Path(
        str(default_scenario_path().parent / "traces" / "compute-load-20dev.csv")
    ).read_text()
    (sub / "mytrace.csv").write_text(trace)
    text = default_scenario_path().read_text().replace(
        'path = "shipped:compute-load-20dev.csv"', 'path = "mytrace.csv"'
    )
    assert 'path = "mytrace.csv"' in text
    (sub / "scen.toml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, arg in ((tmp_path, "sub/scen.toml"), (elsewhere, str(sub / "scen.toml")),
                     (sub, "scen.toml")):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"out-{cwd.name}"
        assert main(["run", arg, "--rounds", "2", "--out", str(out)]) == 0
        meta = json.loads((out / "run.json").read_text())
        assert meta["scenario"]["compute"]["path"] == str(sub / "mytrace.csv")
    frames = [pd.read_csv(tmp_path / f"out-{d}" / "rounds.csv") for d in
              (tmp_path.name, "elsewhere", "sub")]
    assert frames[0]["latency_s"].tolist() == frames[1]["latency_s"].tolist()


def test_paths_on_the_command_line_resolve_from_the_working_directory(tmp_path, monkeypatch):
    trace = default_scenario_path().parent / "traces" / "compute-load-20dev.csv"
    (tmp_path / "here.csv").write_text(trace.read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--rounds", "1", "--set", 'compute.path="here.csv"', "--out", "r"]) == 0


def test_paths_in_a_sweep_spec_resolve_from_its_folder_and_the_base_from_its_own(
    tmp_path, monkeypatch
):
    trace = (default_scenario_path().parent / "traces" / "compute-load-20dev.csv").read_text()
    base_dir, spec_dir = tmp_path / "scenarios", tmp_path / "specs"
    base_dir.mkdir()
    spec_dir.mkdir()
    (base_dir / "base-trace.csv").write_text(trace)
    (spec_dir / "spec-trace.csv").write_text(trace)
    (base_dir / "base.toml").write_text(default_scenario_path().read_text().replace(
        'path = "shipped:compute-load-20dev.csv"', 'path = "base-trace.csv"'))
    (spec_dir / "s.toml").write_text(
        'name = "rel"\nbase = "../scenarios/base.toml"\n[set]\n"run.rounds" = 1\n'
        '[grid]\n"compute.path" = ["spec-trace.csv"]\n[[allocators]]\nname = "greedy"\n'
    )
    (spec_dir / "b.toml").write_text(
        'name = "relbase"\nbase = "../scenarios/base.toml"\n[set]\n"run.rounds" = 1\n'
        '[[allocators]]\nname = "greedy"\n'
    )
    monkeypatch.chdir(tmp_path / "scenarios")  # neither folder's files are found from here
    from desim.experiments.sweep_spec import expand, load_sweep_spec

    for spec, expected in (("s.toml", spec_dir / "spec-trace.csv"),
                           ("b.toml", base_dir / "base-trace.csv")):
        runs = expand(*load_sweep_spec(spec_dir / spec))
        assert runs[0].scenario.compute.path == str(expected)
    assert main(["sweep", str(spec_dir / "s.toml"), "--out", str(tmp_path / "o")]) == 0
