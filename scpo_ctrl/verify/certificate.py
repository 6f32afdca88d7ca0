"""The certificate's vocabulary: checks, verdicts, and what each one claims."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

VERIFIED, FALSIFIED, UNKNOWN = "VERIFIED", "FALSIFIED", "UNKNOWN"
CERTIFICATE_FORMAT = "scpo-certificate/1"


@dataclass(frozen=True)
class Check:
    """One check of the certificate.

    Attributes
    ----------
    name : str
    claim : str
        Exactly what the verdict is about (e.g. "on these 10,000 states ...", "for every initial
        state of the box ...").
    verdict : str
        VERIFIED (the claim holds, by exhaustive checking of its stated domain or by proof),
        FALSIFIED (a concrete counterexample is given), UNKNOWN (neither).
    evidence : str
        How: "hash comparison", "sampled", "search", "proof (...)".
    seconds : float
    details : dict
    counterexample : dict or None
    """

    name: str
    claim: str
    verdict: str
    evidence: str
    seconds: float
    details: dict = field(default_factory=dict)
    counterexample: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)
