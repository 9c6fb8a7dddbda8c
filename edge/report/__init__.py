"""Inspection report from crack alerts: a map, a table, GeoJSON and CSV (``python -m edge.report``).

Loading and building are separate: :func:`load_files` (or any other loader) returns
:class:`AlertRecords`; :func:`build_report` writes the folder from them.
"""

from edge.report.build import build_report, write_report
from edge.report.load import AlertRecords, ReportInputError, load_files
from edge.report.records import DedupOptions, group_cracks

__all__ = ["AlertRecords", "DedupOptions", "ReportInputError", "build_report", "group_cracks", "load_files",
           "write_report"]
