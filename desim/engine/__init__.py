"""The engine: assembly, the SimPy round loop, faults, random streams and records."""
