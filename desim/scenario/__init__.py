"""The validated description of a run: pydantic models, no I/O.

It imports no implementation. The data flow: scenario -> world, costs -> allocators, schemes
-> engine -> results.
"""
