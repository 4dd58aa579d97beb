"""Datasets and task metrics."""
