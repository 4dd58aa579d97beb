"""Reports: report.json, report.md, reproduce.sh and the .npz feeds/outputs of a run."""

from enginekit.report.writer import write_report

__all__ = ["write_report"]
