"""The one home of the instruction template, the system prompt and the answer schema.

The dataset stage fills the template for training; validation and the Ollama scorer fill the same
template at inference; the Modelfile carries the same system prompt. Change the template's wording
only together with TEMPLATE_VERSION: a model answers best on the exact text it was trained on.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Mapping

TEMPLATE_VERSION = "seed-v1"

# The seed's "Instruction Template", verbatim ({{username}} is the profile's handle).
INSTRUCTION_TEMPLATE = (
    "Score this profile. Given the following profile attributes, return a JSON object with: "
    "'handle', 'score' (0.00-1.00 likelihood of being a real person who is an academic researcher), "
    "'reason'.\n"
    "\n"
    "PROFILE ATTRIBUTES:\n"
    "handle: {{username}}\n"
    "displayName: {{display_name}}\n"
    "bio: {{bio}}\n"
    "created_at: {{created_at}}\n"
    "followerCount: {{follower_count}}\n"
    "location: {{location}}\n"
    "(Scored by model: {{scored_by}})"
)

# The seed Modelfile's SYSTEM prompt.
SYSTEM_PROMPT = (
    "You are a profile scorer that evaluates Twitter profiles to identify academic researchers. "
    "Return only valid JSON."
)

# The teacher whose style the model imitates at inference ("Scored by model:" line).
DEFAULT_INFERENCE_TEACHER = "claude-haiku-20240307"

# Field limits, in characters, applied when filling the template. A Twitter bio is at most 160
# characters and a display name 50; the limits leave room for other sources while keeping the
# prompt (template ~90 tokens, system prompt ~25, fields at most 535 characters) plus the answer
# (at most ~305 characters) under a 1,024-token training context even at one token per character
# (CJK). Text that tokenizes worse (byte-fallback emoji) is the training stage's to count and skip.
MAX_BIO_CHARS = 320
MAX_DISPLAY_NAME_CHARS = 60
MAX_LOCATION_CHARS = 60
MAX_HANDLE_CHARS = 50
MAX_REASON_CHARS = 240
TRUNCATION_MARK = "…"

SCORE_DECIMALS = Decimal("0.01")
SCORE_MIN = 0.0
SCORE_MAX = 1.0

# JSON schema of the answer, for Ollama's structured output and for documentation.
ANSWER_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "handle": {"type": "string"},
        "score": {"type": "string", "pattern": r"^(0(\.\d{1,2})?|1(\.0{1,2})?)$"},
        "reason": {"type": "string"},
    },
    "required": ["handle", "score", "reason"],
}

_WHITESPACE_RUN = re.compile(r"\s+")


class AnswerError(ValueError):
    """An answer (teacher's or model's) does not meet the schema. ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    handle: str
    score: float
    reason: str


def clean_text(value: Any) -> str:
    """One line of printable text: control characters dropped, every whitespace run one space.

    Unicode (accents, CJK, RTL scripts, emoji with their zero-width joiners) is kept. Newlines are
    folded so that a field can never start a new line of the template: a bio cannot forge a
    ``handle:`` or ``(Scored by model: …)`` line.
    """
    if value is None:
        return ""
    text = str(value)
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) != "Cc")
    return _WHITESPACE_RUN.sub(" ", text).strip()


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """Cut ``text`` to at most ``limit`` characters (mark included). Returns (text, was_cut)."""
    if len(text) <= limit:
        return text, False
    return text[: limit - len(TRUNCATION_MARK)].rstrip() + TRUNCATION_MARK, True


def format_instruction(
    *,
    handle: str,
    display_name: str,
    bio: str,
    created_at: str,
    follower_count: str,
    location: str,
    scored_by: str,
) -> str:
    """Fill the template with already-cleaned field values."""
    values = {
        "username": handle,
        "display_name": display_name,
        "bio": bio,
        "created_at": created_at,
        "follower_count": follower_count,
        "location": location,
        "scored_by": scored_by,
    }
    # Plain replacement, not str.format: a bio full of braces must not be interpreted.
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match.group(1)], INSTRUCTION_TEMPLATE)


def parse_score(value: Any) -> float:
    """A score as a float in [0, 1], from a number or a numeric string; AnswerError otherwise."""
    if isinstance(value, bool) or value is None:
        raise AnswerError("score_not_a_number", f"score is {value!r}")
    try:
        score = float(str(value).strip())
    except ValueError:
        raise AnswerError("score_not_a_number", f"score is {value!r}") from None
    if not math.isfinite(score):
        raise AnswerError("score_not_a_number", f"score is {value!r}")
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise AnswerError("score_out_of_range", f"score {score} outside [0, 1]")
    return score


def format_score(score: float) -> str:
    """The seed's string form: two decimals, half up ("0.95")."""
    try:
        return str(Decimal(str(score)).quantize(SCORE_DECIMALS, rounding=ROUND_HALF_UP))
    except InvalidOperation as exc:  # parse_score guarantees a finite float; keep the error named
        raise AnswerError("score_not_a_number", f"score is {score!r}") from exc


def format_answer(handle: str, score: float, reason: str) -> str:
    """The training target: compact JSON, keys in the seed's order, score as a 2-decimal string."""
    return json.dumps(
        {"handle": handle, "score": format_score(score), "reason": reason},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def parse_answer(text: str) -> Answer:
    """Parse an answer; strict about the contract (handle, reason, score in [0, 1])."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AnswerError("not_json", str(exc)) from None
    if not isinstance(value, Mapping):
        raise AnswerError("not_an_object", f"answer is {type(value).__name__}")
    handle = value.get("handle")
    reason = value.get("reason")
    if not isinstance(handle, str) or not handle.strip():
        raise AnswerError("empty_handle", "handle missing or empty")
    if not isinstance(reason, str) or not reason.strip():
        raise AnswerError("empty_reason", "reason missing or empty")
    return Answer(handle=handle, score=parse_score(value.get("score")), reason=reason)
