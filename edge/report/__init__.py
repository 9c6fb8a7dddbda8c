"""Offline inspection report from crack alerts: one HTML file, GeoJSON and CSV (``python -m edge.report``)."""

from edge.report.build import write_report
from edge.report.records import DedupOptions, group_cracks

__all__ = ["DedupOptions", "group_cracks", "write_report"]
