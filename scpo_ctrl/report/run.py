"""``scpo-ctrl report RUN_DIR``: gather the run directory's files, render, write ``RUN_DIR/report.html``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_text
from .gather import RunData, gather
from .render import render_html

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class ReportRequest:
    run_dir: str


@dataclass(frozen=True)
class ReportResult:
    path: Path
    data: RunData

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "plant": self.data.name,
            "sections": {section.id: (section.missing or "present") for section in self.data.sections},
            "sources": {source.path: source.sha256 for source in self.data.sources},
        }


def run_report(request: ReportRequest) -> ReportResult:
    """Write the evidence report of ``request.run_dir`` (atomically) and return its path."""
    data = gather(request.run_dir)
    path = Path(request.run_dir) / REPORT_FILE
    atomic_write_text(path, render_html(data))
    return ReportResult(path=path, data=data)
