"""Timing shared by every backend."""
