"""enginekit: export, build, verify and benchmark inference engines, with one honest report."""

__version__ = "0.1.0"
