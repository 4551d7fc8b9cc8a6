"""Wi-Fi RSSI fingerprints as a network sees them: the in-graph transform and the training augmentation.

Both localization architectures take raw RSSI (dBm, 100 in the UJIIndoorLoc
files for "not detected") and map it in the graph, so a deployed model takes
what a phone reports; both augment the mapped fingerprint the same way in
training.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

NOT_DETECTED_THRESHOLD = 0.0  # RSSI is <= 0 dBm; anything above (100 in the files) is "not detected"


class RssiTransform(nn.Module):
    """Raw RSSI -> [0, 1]: not detected (and never-heard access points) -> 0, ``floor`` dBm -> 0, 0 dBm -> 1.

    The "positive" representation of Torres-Sospedra et al. (2015), optionally
    raised to ``power`` (their "powed" representation, which weakens noisy
    low readings). Buffers, so it exports and a deployed model takes raw values.
    """

    def __init__(self, *, undetected_dbm: float, heard: Sequence[int], power: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("floor_dbm", torch.tensor(float(undetected_dbm)))
        self.register_buffer("heard", torch.tensor([float(bool(h)) for h in heard]).view(1, -1))
        self.power = float(power)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """dBm -> [0, 1], linear in dB (the positive representation)."""
        detected = (x <= NOT_DETECTED_THRESHOLD).to(x.dtype) * self.heard
        return torch.clamp((x - self.floor_dbm) / -self.floor_dbm, 0.0, 1.0) * detected

    def curve(self, pos: torch.Tensor) -> torch.Tensor:
        return pos.pow(self.power) if self.power != 1.0 else pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.curve(self.linear(x))


class RssiAugmentation(nn.Module):
    """What another phone, person or day does to a fingerprint, on ``RssiTransform.linear``'s [0, 1] scale.

    A per-fingerprint gain offset (``shift_db``: std in dB; phones differ by
    several dB), per-reading noise (``noise_db``: std in dB) and missed
    detections (``dropout``: probability of losing a detected access point).
    Readings pushed below the floor become "not detected", as they would on a
    less sensitive phone. No parameters or buffers: the model applies it in
    training only, so it is neither in the checkpoint nor in the graph.
    """

    def __init__(self, *, undetected_dbm: float, shift_db: float, noise_db: float, dropout: float) -> None:
        super().__init__()
        # one dB on the [0, 1] scale, from the floor as RssiTransform's float32 buffer holds it
        self.per_db = 1.0 / -float(torch.tensor(float(undetected_dbm)))
        self.shift_db = float(shift_db)
        self.noise_db = float(noise_db)
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detected = (x > 0).to(x.dtype)
        if self.shift_db:
            x = x + torch.randn(x.shape[0], 1, device=x.device, dtype=x.dtype) * (self.shift_db * self.per_db)
        if self.noise_db:
            x = x + torch.randn_like(x) * (self.noise_db * self.per_db)
        if self.dropout:
            detected = detected * (torch.rand_like(x) >= self.dropout).to(x.dtype)
        return torch.clamp(x, 0.0, 1.0) * detected
