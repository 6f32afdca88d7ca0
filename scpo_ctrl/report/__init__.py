"""The evidence report: one self-contained HTML page per run directory (``scpo-ctrl report RUN_DIR``).

``gather`` reads the run directory's files into frozen dataclasses (every
number on the page comes from one of them, with the sha256 of the file it
came from); ``render`` turns them into HTML through a Jinja2 template with
the PNGs embedded as data URIs; ``run`` writes ``RUN_DIR/report.html``.
"""

from .run import ReportRequest, ReportResult, run_report

__all__ = ["ReportRequest", "ReportResult", "run_report"]
