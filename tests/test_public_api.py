"""The public API: every exported name resolves, and importing desim loads nothing else."""

import subprocess
import sys

import desim


def test_every_export_resolves_to_the_object_of_its_module():
    import importlib

    for name, module in desim.EXPORTS.items():
        assert getattr(desim, name) is getattr(importlib.import_module(module), name), name
    assert set(desim.__all__) == {"__version__", *desim.EXPORTS}


def test_importing_desim_loads_no_submodule_and_no_heavy_library():
    code = ("import sys, desim; print(sorted(m for m in sys.modules if m.startswith('desim.') "
            "or m.split('.')[0] in ('torch', 'pandas', 'simpy', 'matplotlib', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_documented_two_step_run_works(tmp_path):
    scenario = desim.load_scenario(None, ["run.rounds=2", 'allocator.name="crunch"'])
    result = desim.build_simulation(scenario).run()
    desim.write_results(result, tmp_path / "r")
    assert (tmp_path / "r" / "run.json").exists()
    assert len(result.rounds_frame()) == 2
