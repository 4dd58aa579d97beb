"""Backends: one module per backend, each a Runner (and later a Builder). See enginekit.registry."""
