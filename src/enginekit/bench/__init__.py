"""Timing shared by every backend: the protocol (`protocol`), statistics (`stats`), sweeps (`sweep`).

The library call is :func:`enginekit.bench.sweep.benchmark`; `enginekit bench` is its command line.
"""
