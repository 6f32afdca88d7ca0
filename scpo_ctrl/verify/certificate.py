"""The certificate's vocabulary: checks, verdicts, and what each one claims.

A :class:`Check` is one entry of ``certificate.json``'s ``checks``; the file itself is
:class:`scpo_ctrl.run_files.Certificate`, where both are defined with the file's reader and writer.
"""

from __future__ import annotations

from ..run_files import Certificate, CertificateSummary, Check

VERIFIED, FALSIFIED, UNKNOWN = "VERIFIED", "FALSIFIED", "UNKNOWN"
CERTIFICATE_FORMAT = "scpo-certificate/1"

__all__ = ["CERTIFICATE_FORMAT", "FALSIFIED", "UNKNOWN", "VERIFIED", "Certificate", "CertificateSummary", "Check"]
