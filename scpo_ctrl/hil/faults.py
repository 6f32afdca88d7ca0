"""Fault injection on the HIL link (``--faults drop=0.05,corrupt=0.05,delay=0.02,delay_s=0.08,noise=0.01``,
or a preset name of ``verification/campaign.yaml``, ``--faults link``, optionally followed by KEY=VALUE items
that change its values, ``--faults link,drop=0.1``).

Faults act on the wire, between the harness's framing and the target's (see hil/protocol.md):

* ``drop``: probability that a frame is lost, per frame and direction (STATE up, CONTROL down);
* ``corrupt``: probability that a frame has 1 to 3 of its bytes overwritten (a burst the CRC
  always detects when it fits in 16 bits; wider ones are detected with probability 1 - 2^-16);
* ``delay``: probability that a STATE frame leaves ``delay_s`` seconds late (default 1.5 x the
  watchdog deadline, so the watchdog fires and the late frame arrives out of sequence);
* ``noise``: Gaussian sensor noise, standard deviation ``noise`` x the half-width of the plant's
  initial-state box, per state, added to the state the harness sends (not to the plant).

Rates are at most the campaign file's ``hil.faults.max_rate``. Retransmission requests (REPEAT) are not
faulted. All draws come from one seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config.campaign import FAULT_KEYS as KEYS, FAULT_RATES, HilFaultCampaign, load_campaign
from ..errors import UsageError


@dataclass(frozen=True)
class FaultSpec:
    """Fault rates (probabilities per frame), the late-frame delay [s] (None: 1.5 x watchdog), noise [-]."""

    drop: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.0
    delay_s: float | None = None
    noise: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.drop or self.corrupt or self.delay or self.noise)

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in KEYS}


def parse_faults(text: str | None, campaign: HilFaultCampaign | None = None) -> FaultSpec:
    """``"drop=0.05,corrupt=0.05"`` or ``"PRESET[,KEY=VALUE...]"`` -> :class:`FaultSpec`.

    ``campaign``: the presets and largest rate (None: the campaign file's). Raises :class:`UsageError`
    on bad input.
    """
    if not text:
        return FaultSpec()
    if campaign is None:
        campaign = load_campaign().hil_faults
    items = [item.strip() for item in text.split(",")]
    values = {}
    if "=" not in items[0]:
        if items[0] not in campaign.presets:
            known = ", ".join(campaign.presets) or "none"
            raise UsageError(f"--faults: {items[0]!r} is neither KEY=VALUE nor a preset of the campaign file "
                             f"(presets: {known})")
        values.update(campaign.presets[items[0]])
        items = items[1:]
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise UsageError(f"--faults: {item!r} is not KEY=VALUE with KEY one of {', '.join(KEYS)}")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--faults: {key}={value!r} is not a number") from None
        if not np.isfinite(number) or number < 0 or (key in FAULT_RATES and number > campaign.max_rate):
            raise UsageError(f"--faults: {key} must be finite, >= 0 (and <= {campaign.max_rate:g} for a rate), "
                             f"not {value}")
        values[key] = number
    return FaultSpec(**values)


class FaultInjector:
    """Draws the faults of one run from a seeded generator and counts what it injected."""

    def __init__(self, spec: FaultSpec, seed: int):
        self.spec = spec
        self.rng = np.random.default_rng(seed)
        self.counts = {"uplink_dropped": 0, "uplink_corrupted": 0, "uplink_delayed": 0,
                       "downlink_dropped": 0, "downlink_corrupted": 0}

    def uplink(self, frame: bytes) -> tuple:
        """``(bytes to send or None, delay [s] or 0)`` for a STATE frame."""
        if self.spec.drop and self.rng.random() < self.spec.drop:
            self.counts["uplink_dropped"] += 1
            return None, 0.0
        if self.spec.corrupt and self.rng.random() < self.spec.corrupt:
            self.counts["uplink_corrupted"] += 1
            frame = self._corrupt(frame)
        delay = 0.0
        if self.spec.delay and self.rng.random() < self.spec.delay:
            self.counts["uplink_delayed"] += 1
            delay = -1.0  # the harness substitutes the default (1.5 x watchdog) when delay_s is None
            if self.spec.delay_s is not None:
                delay = self.spec.delay_s
        return frame, delay

    def downlink(self, frame: bytes) -> bytes | None:
        """The CONTROL frame as the harness's parser will see it (None: lost)."""
        if self.spec.drop and self.rng.random() < self.spec.drop:
            self.counts["downlink_dropped"] += 1
            return None
        if self.spec.corrupt and self.rng.random() < self.spec.corrupt:
            self.counts["downlink_corrupted"] += 1
            return self._corrupt(frame)
        return frame

    def noise(self, half_width: np.ndarray) -> np.ndarray:
        """Sensor noise for one measurement, shape (nx,) [state units]."""
        if not self.spec.noise:
            return np.zeros_like(half_width)
        return self.spec.noise * half_width * self.rng.standard_normal(half_width.shape)

    def _corrupt(self, frame: bytes) -> bytes:
        data = bytearray(frame)
        start = int(self.rng.integers(0, len(data)))
        for i in range(start, min(start + int(self.rng.integers(1, 4)), len(data))):
            data[i] ^= int(self.rng.integers(1, 256))  # never a no-op
        return bytes(data)
