"""The world a run replays.

Piecewise-constant signals, fading channels, compute timelines, throughput traces and their
importers, and the Shannon rate.
"""
