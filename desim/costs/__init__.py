"""What a block costs.

Transformer shapes, the cost models (analytic and profiled), profile fitting and energy.
"""
