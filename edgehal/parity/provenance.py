"""Provenance: did an artifact come from the checkpoint it is compared with?

An export records the sha256 of the checkpoint file it was made from
(``source_sha256``). Parity against a different checkpoint can still pass by
chance (a retrained model with the same mistakes) or fail for the wrong
reason, so a mismatch is always reported, and fails the artifact when the
check is strict.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgehal.parity.runs import RunInfo

MATCH, MISMATCH, UNRECORDED, UNCHECKED = "match", "mismatch", "unrecorded", "unchecked"


@dataclass(frozen=True)
class SourceCheck:
    """``status`` is match, mismatch, unrecorded (the artifact records no source) or
    unchecked (the reference is not a checkpoint run, or the candidate is a checkpoint)."""

    status: str
    message: str

    @property
    def mismatch(self) -> bool:
        return self.status == MISMATCH


def check_source(reference: RunInfo, candidate: RunInfo) -> SourceCheck:
    if reference.kind != "checkpoint":
        return SourceCheck(UNCHECKED, f"the reference ran a {reference.kind} file, not a checkpoint: "
                                      "the artifact's source is not checked")
    if candidate.kind == "checkpoint":
        return SourceCheck(UNCHECKED, "is a checkpoint itself: it records no source to check")
    if candidate.source_sha256 is None:
        return SourceCheck(UNRECORDED, "records no source checkpoint: cannot tell whether it was exported "
                                       f"from {reference.artifact}")
    if candidate.source_sha256 != reference.sha256:
        return SourceCheck(MISMATCH, f"was exported from a checkpoint with sha256 {candidate.source_sha256[:12]}..., "
                                     f"not from the reference {reference.artifact} "
                                     f"({reference.sha256[:12]}...)")
    return SourceCheck(MATCH, f"was exported from the reference checkpoint (sha256 {reference.sha256[:12]}...)")
