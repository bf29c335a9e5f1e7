"""Experiments on top of runs: parameter sweeps, paper figures and benchmarks."""
