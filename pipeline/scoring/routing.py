"""Gradual migration (the spec's Phase 4): which profiles the custom model scores, and which the
orchestrator keeps sending to its teacher (Claude).

A profile's place is a stable hash of its twitter_id, so the same profile takes the same route in
every batch and every week, and raising the share only adds profiles (one routed at 10 % is routed
at 20 %). The hash is salted: it is independent of the holdout's hash (pipeline.dataset.split), so
the routed share is not the held-out share.
"""

from __future__ import annotations

import hashlib
import math
from enum import Enum

from pipeline.errors import InvalidArgument

SALT = b"customModelShare:"
FULL_SHARE = 100.0
# The audit slice: a share of the routed profiles the orchestrator also sends to its teacher, so
# that at any customModelShare the shadow set, the holdout and next week's training data keep
# getting teacher labels of the profiles the custom model scores. Its own salt: independent of the
# routing and of the holdout's hash.
AUDIT_SALT = b"teacherAuditShare:"
DEFAULT_AUDIT_SHARE = 5.0


class Route(str, Enum):
    """Who scores a profile: the custom model answered, or the orchestrator asks its teacher."""

    CUSTOM = "custom"
    TEACHER = "teacher"


def position(twitter_id: str, salt: bytes = SALT) -> float:
    """The profile's place in [0, 100): the first 8 bytes of sha256(salt + id) as a fraction."""
    digest = hashlib.sha256(salt + twitter_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * FULL_SHARE


def check_share(value: object, name: str = "customModelShare") -> float:
    """A share in percent, 0-100; anything else is a named error."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= FULL_SHARE:
        raise InvalidArgument(f"{name} must be a percentage from 0 to 100, got {value!r}")
    return float(value)


def parse_share(text: str, name: str = "customModelShare") -> float:
    """A share from the environment or a flag ("10", "12.5"); ValueError names what is wrong."""
    try:
        return check_share(float(text), name)
    except (ValueError, InvalidArgument):
        raise ValueError(f"{name} must be a percentage from 0 to 100, got {text!r}") from None


def parse_audit_share(text: str) -> float:
    return parse_share(text, "teacherAuditShare")


def routed_to_custom(twitter_id: str, share: float) -> bool:
    return position(twitter_id) < share


def in_audit_slice(twitter_id: str, audit_share: float) -> bool:
    """Whether a routed profile is also to be scored by the teacher (ScoreProfiles flags it)."""
    return position(twitter_id, AUDIT_SALT) < audit_share
