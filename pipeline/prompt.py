"""The one home of the instruction template, the system prompt and the answer schema.

The dataset stage fills the template for training; validation and the Ollama scorer fill the same
template at inference; the Modelfile carries the same system prompt. Change the template's wording
only together with TEMPLATE_VERSION: a model answers best on the exact text it was trained on.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from itertools import compress, count, repeat
from json.encoder import encode_basestring  # C-accelerated
from typing import Any

from pipeline import contracts
from pipeline.errors import InvalidArgument

TEMPLATE_VERSION = "seed-v1"

# The spec's "Instruction Template", verbatim ({{username}} is the profile's handle).
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

# The template's placeholders, in the order format_instruction passes them, and the literal text
# around them (one more piece than placeholders): filling is joining the pieces with the values.
_TEMPLATE_FIELDS = ("username", "display_name", "bio", "created_at", "follower_count", "location", "scored_by")
if re.findall(r"\{\{(\w+)\}\}", INSTRUCTION_TEMPLATE) != list(_TEMPLATE_FIELDS):
    raise RuntimeError("INSTRUCTION_TEMPLATE's placeholders changed: update _TEMPLATE_FIELDS and format_instruction")
_TEMPLATE_LITERALS = tuple(re.split(r"\{\{\w+\}\}", INSTRUCTION_TEMPLATE))

# The spec's Modelfile's SYSTEM prompt.
SYSTEM_PROMPT = "You are a profile scorer that evaluates Twitter profiles to identify academic researchers. Return only valid JSON."

# The teacher whose style the model imitates at inference ("Scored by model:" line).
DEFAULT_INFERENCE_TEACHER = contracts.INFERENCE_TEACHER

# Field limits, in characters, applied when filling the template: every field has one, so no
# field of a request or a table row (a TEXT created_at of a megabyte) makes a longer prompt. A
# Twitter bio is at most 160 characters and a display name 50; created_at fits an ISO timestamp
# with microseconds and offset (32), follower_count a signed 64-bit count (20), a teacher's name the
# longest model id in use with room (40). The limits leave room for other sources while keeping
# the prompt (template ~90 tokens, system prompt ~25, fields at most 582 characters) plus the answer
# (at most ~305 characters) under a 1,024-token training context even at one token per character
# (CJK). Text that tokenizes worse (byte-fallback emoji) is the training stage's to count and skip.
MAX_BIO_CHARS = 320
MAX_DISPLAY_NAME_CHARS = 60
MAX_LOCATION_CHARS = 60
MAX_HANDLE_CHARS = 50
MAX_CREATED_AT_CHARS = 32
MAX_FOLLOWER_COUNT_CHARS = 20
MAX_TEACHER_CHARS = 40
MAX_REASON_CHARS = 240
TRUNCATION_MARK = "…"
# Tokens an answer may take at inference. The longest answer is about 330 characters (handle 50,
# reason 240, keys and score), ~110 Mistral tokens; the margin covers byte-fallback text. An answer
# cut at this budget is invalid JSON and counts against the gates (the spec's 2048 only adds latency).
MAX_ANSWER_TOKENS = 256

SCORE_DECIMALS = Decimal("0.01")
SCORE_MIN = 0.0
SCORE_MAX = 1.0

# JSON schema of the answer, for Ollama's structured output and for documentation.
ANSWER_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "handle": {"type": "string"},
        # Exactly what training writes (format_score: two decimals), as the template's first token is
        # (#14): a looser pattern let a confused model close the string after "0" - a seed profile
        # scored 0 by a model that meant 0.8x (docs/benchmarks.md, the demo's outcome per seed).
        # Character classes, not \d or \.: llama-cpp-python's schema-to-grammar port turns those into
        # escapes its grammar parser rejects (and then crashes on). Ollama reads either form.
        "score": {"type": "string", "pattern": r"^(0[.][0-9]{2}|1[.]00)$"},
        "reason": {"type": "string"},
    },
    "required": ["handle", "score", "reason"],
}


# X's handle alphabet and length. Only such a handle becomes a grammar constant (answer_schema).
HANDLE_CONSTANT = re.compile(r"[A-Za-z0-9_]{1,15}")


def answer_schema(handle: str) -> dict[str, Any]:
    """ANSWER_JSON_SCHEMA for one profile: the handle must be the profile's own (``const``).

    Serving decodes under this schema (Ollama's ``format``, the llama.cpp grammar), so the answer
    repeats the handle by construction: a model cannot answer about another profile, and a model
    that fails to copy the handle (the tiny demo model does: docs/benchmarks.md) is not derailed
    for the rest of its answer. Only a handle of X's alphabet becomes a constant: other text (a
    damaged row, a quote or backslash) would be untrusted text inside a grammar, and
    llama-cpp-python's schema-to-grammar port crashes on some escapes; such a profile is decoded
    with the plain schema, its handle checked afterwards as before (ScoreResult.handle_matches).
    """
    if not HANDLE_CONSTANT.fullmatch(handle):
        return ANSWER_JSON_SCHEMA
    properties = {**ANSWER_JSON_SCHEMA["properties"], "handle": {"type": "string", "const": handle}}
    return {**ANSWER_JSON_SCHEMA, "properties": properties}


# A JSON string literal, unicode kept as is (the model trains on the text, not on \u escapes).
json_string = encode_basestring

_WHITESPACE_RUN = re.compile(r"\s+")
# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F. Those that are whitespace
# (tab, newline, U+001C-U+001F, U+0085) are folded to a space; the others are dropped.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")
_NON_SPACE_CONTROLS = re.compile(
    "[" + "".join(re.escape(chr(code)) for code in [*range(0x20), *range(0x7F, 0xA0)] if not chr(code).isspace()) + "]"
)


# Unicode's format characters (category Cf): bidirectional controls (U+202E reorders what a reader
# sees without changing the bytes), invisible ones (soft hyphen, zero-width space, word joiner) and
# the tag characters U+E0020-U+E007F, which spell hidden ASCII no report shows. All are dropped but
# the zero-width non-joiner and joiner (U+200C, U+200D): emoji sequences and several scripts need
# them. Listed as ranges (Unicode 15.1, Python 3.12's database; tests/pipeline/test_prompt.py checks
# that every Cf of the running Python's database is among them) rather than built from unicodedata
# at import, which would scan 1.1 M code points in every Lambda's cold start.
FORMAT_CHARACTER_RANGES = (
    ("\u00ad", "\u00ad"),
    ("\u0600", "\u0605"),
    ("\u061c", "\u061c"),
    ("\u06dd", "\u06dd"),
    ("\u070f", "\u070f"),
    ("\u0890", "\u0891"),
    ("\u08e2", "\u08e2"),
    ("\u180e", "\u180e"),
    ("\u200b", "\u200b"),
    ("\u200e", "\u200f"),
    ("\u202a", "\u202e"),
    ("\u2060", "\u2064"),
    ("\u2066", "\u206f"),
    ("\ufeff", "\ufeff"),
    ("\ufff9", "\ufffb"),
    ("\U000110bd", "\U000110bd"),
    ("\U000110cd", "\U000110cd"),
    ("\U00013430", "\U0001343f"),
    ("\U0001bca0", "\U0001bca3"),
    ("\U0001d173", "\U0001d17a"),
    ("\U000e0001", "\U000e0001"),
    ("\U000e0020", "\U000e007f"),
)
_FORMAT_CONTROLS = re.compile("[" + "".join(f"{first}-{last}" for first, last in FORMAT_CHARACTER_RANGES) + "]")


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
    ``handle:`` or ``(Scored by model: …)`` line. (``clean_texts`` of one value.)
    """
    return clean_texts((value,))[0]


def _fold_controls_and_whitespace(text: str) -> str:
    return _WHITESPACE_RUN.sub(" ", _FORMAT_CONTROLS.sub("", _NON_SPACE_CONTROLS.sub("", text)))


def clean_texts(values: Iterable[Any]) -> list[str]:
    """``clean_text`` of every value, as a batch: the one implementation of the rule.

    A text that is printable and has no double space (most profile fields) only needs its ends
    stripped, checked and done in C; the others are cleaned together by one pass of each regex
    over them joined (``_apply_joined``): about half a microsecond a field in the export's
    batches (docs/benchmarks.md); a single request is a batch of one.
    """
    return _cleaned_and_joined(values)[0]


def _cleaned_and_joined(values: Iterable[Any]) -> tuple[list[str], str]:
    """``clean_texts`` of the values, and the cleaned texts joined by _TEST_JOINER."""
    texts = list(values)
    try:
        joined = _TEST_JOINER.join(texts)
    except TypeError:  # a NULL (None), or a number (serving's requests and tests)
        texts = ["" if text is None else text if type(text) is str else str(text) for text in texts]
        joined = _TEST_JOINER.join(texts)
    unprintable, spaced = not joined.isprintable(), "  " in joined
    if unprintable or spaced:  # else no text of the batch needs folding
        # Text by text, only the test the batch failed; each runs in C (map, compress): no
        # interpreted step per text.
        unclean = set()
        if unprintable:
            unclean |= _positions(map(operator.not_, map(str.isprintable, texts)))
        if spaced:
            unclean |= _positions(map(operator.contains, texts, repeat("  ")))
        _apply_joined(texts, sorted(unclean), _fold_controls_and_whitespace)
        joined = _TEST_JOINER.join(texts)
    # After folding, the only whitespace left is the space (the one printable whitespace character;
    # tests/pipeline/test_prompt.py checks every code point): a batch none of whose texts starts or
    # ends with one needs no strip.
    if joined.startswith(" ") or joined.endswith(" ") or f" {_TEST_JOINER}" in joined or f"{_TEST_JOINER} " in joined:
        texts = list(map(str.strip, texts))
        joined = _TEST_JOINER.join(texts)
    return texts, joined


# Joins a batch's texts for a test of all of them at once (one C scan instead of one per text): a
# printable ASCII character, not a space and no marker's first character, so the joined text passes
# a test exactly when every text does; a rare one in profile text ("`", where "|" separates many a
# bio's parts), so that the strip test's " `" seldom comes from a text itself.
_TEST_JOINER = "`"


def _positions(flags: Iterable[bool]) -> set[int]:
    """The positions at which ``flags`` is true."""
    return set(compress(count(), flags))


# Characters that join a batch's texts into one string for one pass of a rule's regexes: printable,
# not whitespace, not a control or format character and in no template marker, so no rule removes,
# folds or matches across one. A batch takes the first that none of its texts contains.
_BATCH_SEPARATORS = ("\u241e", "\u241f", "\u241d", "\u2e3b")


def _apply_joined(texts: list[str], indices: list[int], rule: Callable[[str], str]) -> None:
    """``texts[i] = rule(texts[i])`` for each index, in place, by one call of ``rule`` on them joined.

    ``rule`` must act on each text independently of its neighbours (regex substitutions that cannot
    match a separator). A batch holding every separator is halved until a part holds none (a single
    text needs no separator).
    """
    if len(indices) <= 1:
        for index in indices:
            texts[index] = rule(texts[index])
        return
    chosen = [texts[index] for index in indices]
    for separator in _BATCH_SEPARATORS:
        joined = separator.join(chosen)
        if joined.count(separator) == len(chosen) - 1:
            for index, text in zip(indices, rule(joined).split(separator), strict=True):
                texts[index] = text
            return
    half = len(indices) // 2
    _apply_joined(texts, indices[:half], rule)
    _apply_joined(texts, indices[half:], rule)


# What profile text must never reproduce: the chat delimiters, the tokenizer's control-token strings
# (Mistral's <s>, </s>, <unk>: transformers, llama.cpp and Ollama all parse them as control tokens
# in text) and the template's own structure lines. Spaces and case are loose on purpose: a variant
# that a reader or a model takes for the real thing is neutralised too.
TEMPLATE_MARKERS = re.compile(
    r"\[\s*/?\s*INST\s*\]"  # [INST], [/INST]
    r"|<\s*/?\s*s\s*>|<\s*unk\s*>"  # <s>, </s>, <unk>
    r"|PROFILE\s+ATTRIBUTES\s*:"
    r"|\(\s*Scored\s+by\s+model\s*:",
    re.IGNORECASE,
)
# A marker keeps its letters and loses its syntax: brackets become parentheses, the colon (and any
# space before it) goes.
# "[/INST]" -> "(/INST)", "</s>" -> "(/s)", "PROFILE ATTRIBUTES:" -> "PROFILE ATTRIBUTES".
_MARKER_SYNTAX = str.maketrans({"[": "(", "]": ")", "<": "(", ">": ")", ":": None})


def _defuse(match: re.Match[str]) -> str:
    # rstrip: "ATTRIBUTES :" loses its colon without leaving a space run behind.
    return match.group(0).translate(_MARKER_SYNTAX).rstrip()


# Every template marker holds one of these (its bracket, or its colon): a text holding none has none.
_COLON = ":"
_BRACKET_MARKER_FIRSTS = ("[", "<")
_MARKER_FIRST_CHARACTERS = (*_BRACKET_MARKER_FIRSTS, _COLON)


def neutralise_markers(text: str) -> str:
    """``text`` with every template marker defused; repeated until none is left, since removing a
    colon can complete another marker ("PROFILE ATTRIBUTES::")."""
    # Three C-level substring tests first: most fields hold none of these characters.
    while any(map(text.__contains__, _MARKER_FIRST_CHARACTERS)):
        defused = TEMPLATE_MARKERS.sub(_defuse, text)
        if defused == text:
            break
        text = defused
    return text


def clean_field(value: Any) -> str:
    """A template field (or a teacher's reason): ``clean_text``, then ``neutralise_markers``.

    The one cleaning rule of everything that fills the template, in training rows and in serving
    requests alike: one line (it cannot start a template line), no control characters, and no
    delimiter, control-token string or structure marker (it cannot end the prompt or forge a turn).
    (``clean_fields`` of one value.)
    """
    return clean_fields((value,))[0]


def clean_fields(values: Iterable[Any]) -> list[str]:
    """``clean_field`` of every value, as a batch (see ``clean_texts``); only the texts that can
    hold a marker go through the marker regex, joined."""
    texts, joined = _cleaned_and_joined(values)
    if not any(map(joined.__contains__, _MARKER_FIRST_CHARACTERS)):  # no text of the batch can hold a marker
        return texts
    marked = set().union(*(_positions(map(operator.contains, texts, repeat(first))) for first in _BRACKET_MARKER_FIRSTS if first in joined))
    if _COLON in joined:
        # A text whose only marker-like character is a colon needs the regex only where the texts
        # with a colon hold a colon marker's words.
        colons = _positions(map(operator.contains, texts, repeat(_COLON)))
        if _may_hold_a_colon_marker(_TEST_JOINER.join(map(texts.__getitem__, colons - marked))):
            marked |= colons
    _apply_joined(texts, sorted(marked), neutralise_markers)
    return texts


# The words of the markers that end in a colon ("PROFILE ATTRIBUTES:", "(Scored by model:"), and
# the characters other than ASCII letters that TEMPLATE_MARKERS (IGNORECASE) takes for one of their
# letters: long s (s), dotted and dotless i (i). Found by matching each letter against every code
# point (tests/pipeline/test_prompt.py keeps the list true).
COLON_MARKER_WORDS = (b"scored", b"attributes")
CASE_INSENSITIVE_SPECIALS = ("\u017f", "\u0130", "\u0131")


def _may_hold_a_colon_marker(text: str) -> bool:
    """False when ``text`` cannot hold a colon marker: it lacks both words, in any case. A colon is
    common in profile text ("Papers: ..."), those words are not; a few C scans decide instead of
    the marker regex over every text with a colon (about 10 ns a character)."""
    if any(map(text.__contains__, CASE_INSENSITIVE_SPECIALS)):
        return True
    # Every other character the regex takes for a letter of the words is an ASCII letter, so the
    # UTF-8 bytes with their ASCII letters lowered tell: bytes.lower is a table lookup a byte, where
    # str.lower looks up Unicode's case data for each character of any text that is not all ASCII.
    lowered = text.encode("utf-8", "surrogatepass").lower()
    return any(map(lowered.__contains__, COLON_MARKER_WORDS))


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
    return fill_template((handle, display_name, bio, created_at, follower_count, location, scored_by))


def fill_template(values: tuple[str, ...]) -> str:
    """The template filled with one row's already-cleaned values, in _TEMPLATE_FIELDS' order
    (``fill_templates`` of one row)."""
    return fill_templates([[value] for value in values])[0]


def fill_templates(columns: Sequence[Sequence[str]]) -> list[str]:
    """The template filled for each row of already-cleaned columns (one per placeholder, in
    _TEMPLATE_FIELDS' order): the one way an instruction's text is made.

    Each row is the template's literal pieces joined with its values, in C (str.join mapped over
    the rows): a value (a bio full of "{{bio}}" or "%s") is inserted as text, never interpreted, and
    nothing rescans the template's ~420 literal characters per row, as %-formatting did (a third of
    its cost: docs/benchmarks.md).
    """
    if len(columns) != len(_TEMPLATE_FIELDS) or len(set(map(len, columns))) > 1:
        raise ValueError(f"fill_templates takes {len(_TEMPLATE_FIELDS)} columns of one length, got lengths {list(map(len, columns))}")
    pieces: list[Iterable[str]] = []
    for literal, column in zip(_TEMPLATE_LITERALS[:-1], columns, strict=True):
        pieces += (repeat(literal), column)
    pieces.append(repeat(_TEMPLATE_LITERALS[-1]))
    return list(map("".join, zip(*pieces, strict=False)))  # as long as the columns: repeat() has no end


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


# The template as a regex: literal text escaped, each {{field}} one line of text. Reads an
# instruction back into its fields (ValidateData checks every field is clean).
_TEMPLATE_PARTS = re.split(r"\{\{(\w+)\}\}", INSTRUCTION_TEMPLATE)  # literal, field, literal, ...
_TEMPLATE_REGEX = re.compile(
    "".join(re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^\n]*)" for index, part in enumerate(_TEMPLATE_PARTS))
)


def instruction_fields(instruction: str) -> dict[str, str] | None:
    """The field values of a filled template (keys as in the template), or None when
    ``instruction`` is not exactly the template with one line per field."""
    match = _TEMPLATE_REGEX.fullmatch(instruction)
    return match.groupdict() if match else None


def with_teacher(instruction: str, teacher: str) -> str:
    """``instruction`` (a filled template) with ``teacher`` on its "Scored by model" line: a
    dataset row asked as production asks it (production names DEFAULT_INFERENCE_TEACHER whoever
    labelled the row). InvalidArgument when ``instruction`` is not the template."""
    fields = instruction_fields(instruction)
    if fields is None:
        raise InvalidArgument("the instruction does not follow the template")
    fields["scored_by"] = clean_field(teacher)
    return fill_template(tuple(fields[name] for name in _TEMPLATE_FIELDS))


def format_score(score: float) -> str:
    """The spec's string form: two decimals, half up ("0.95")."""
    try:
        return str(Decimal(str(score)).quantize(SCORE_DECIMALS, rounding=ROUND_HALF_UP))
    except InvalidOperation as exc:  # parse_score guarantees a finite float; keep the error named
        raise AnswerError("score_not_a_number", f"score is {score!r}") from exc


def format_answer(handle: str, score: float, reason: str) -> str:
    """The training target: compact JSON, keys in the spec's order, score as a 2-decimal string."""
    return format_answers([handle], [format_score(score)], [reason])[0]


def format_answers(handles: list[str], score_texts: list[str], reasons: list[str]) -> list[str]:
    """``format_answer`` of each row, its score already in its two-decimal form (format_score): the
    bytes of json.dumps(..., ensure_ascii=False, separators=(",", ":")) (the tests hold it to that)."""
    # Written by orjson: two fifths less than assembling the object from json's C string encoder
    # (docs/benchmarks.md). Imported here: only the dataset stage (and the demo) formats answers; the
    # runtimes that only read them (training, conversion) do not ship orjson.
    import orjson

    rows = zip(handles, score_texts, reasons, strict=True)
    return [orjson.dumps({"handle": handle, "score": score, "reason": reason}).decode() for handle, score, reason in rows]


def _answer_object(text: str) -> Mapping[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AnswerError("not_json", str(exc)) from None
    if not isinstance(value, Mapping):
        raise AnswerError("not_an_object", f"answer is {type(value).__name__}")
    return value


def _handle_and_reason(value: Mapping[str, Any]) -> tuple[str, str]:
    handle = value.get("handle")
    reason = value.get("reason")
    if not isinstance(handle, str) or not handle.strip():
        raise AnswerError("empty_handle", "handle missing or empty")
    if not isinstance(reason, str) or not reason.strip():
        raise AnswerError("empty_reason", "reason missing or empty")
    return handle, reason


def parse_answer(text: str) -> Answer:
    """Parse an answer of a dataset row; strict about the contract (handle, reason, score in [0, 1])."""
    value = _answer_object(text)
    handle, reason = _handle_and_reason(value)
    return Answer(handle=handle, score=parse_score(value.get("score")), reason=reason)


_CODE_FENCE = re.compile(r"^```[A-Za-z]*\s*|\s*```$")
SCORE_IN_SCHEMA = re.compile(ANSWER_JSON_SCHEMA["properties"]["score"]["pattern"].strip("^$"))
# JSON's \ud800-style escapes decode to lone surrogates, which no UTF-8 writer can encode.
_SURROGATES = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so that it can be written as UTF-8."""
    return _SURROGATES.sub("\ufffd", text)


def parse_model_score(value: Any) -> float:
    """A model's score as the answer schema has it: a string of two decimals in [0, 1] ("0.95").
    Anything else, a number, " 0.5 ", "-0.0" or "1e-400" among them, is an AnswerError."""
    if isinstance(value, str) and SCORE_IN_SCHEMA.fullmatch(value):
        return float(value)
    parse_score(value)  # the closest reason: not a number, out of range ...
    raise AnswerError("score_not_in_schema", f'score {value!r} is not a two-decimal string such as "0.95"')


def parse_model_answer(text: str) -> Answer:
    """A model's answer, held to the answer schema; its reason cleaned and bounded for whoever reads it.

    Forgiven: surrounding whitespace, a Markdown code fence, text around the one JSON object.
    Not forgiven (AnswerError): no JSON object, a missing or empty handle or reason, text no UTF-8
    can hold (a lone surrogate escape), a score that is not the schema's two-decimal string in [0, 1].
    The reason comes back one clean line (clean_field: no control, format or template characters)
    of at most MAX_REASON_CHARS: the orchestrator stores and shows it.
    """
    if not isinstance(text, str):
        raise AnswerError("not_json", f"answer is {type(text).__name__}")
    stripped = _CODE_FENCE.sub("", text.strip()).strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end < start:
        raise AnswerError("not_json", f"no JSON object in {text[:80]!r}")
    value = _answer_object(stripped[start : end + 1])
    handle, reason = _handle_and_reason(value)
    if _SURROGATES.search(handle) or _SURROGATES.search(reason):
        raise AnswerError("invalid_text", "the answer holds a lone surrogate escape (not Unicode text)")
    score = parse_model_score(value.get("score"))
    reason = truncate(clean_field(reason), MAX_REASON_CHARS)[0]
    if not reason:
        raise AnswerError("empty_reason", "reason holds no printable text")
    return Answer(handle=handle, score=score, reason=reason)


# Mistral-Instruct's chat format ([INST] ... [/INST], then the answer and </s>). Mistral's template
# has no system role, so the system prompt opens the first user turn, as Mistral's own examples do.
# The tiny model ships this template; a real Mistral tokenizer brings its own, which renders the
# same text for these messages.
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)


def chat_messages(instruction: str) -> list[dict[str, str]]:
    """The conversation the model sees: system prompt and instruction in one user turn."""
    return [{"role": "user", "content": f"{SYSTEM_PROMPT}\n\n{instruction}"}]


def prompt_token_ids(tokenizer, instruction: str) -> list[int]:
    """Token ids of the prompt, up to and including ``[/INST]`` (one BOS, from the template).

    The one formatting function of training and inference: the trainer appends the answer's ids
    to these; the local scorer generates after them; the Ollama TEMPLATE must render the same text.
    """
    ids = tokenizer.apply_chat_template(chat_messages(instruction), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


# Encoded before the answer and then cut off, so that the answer's first token carries no dummy
# prefix: a newline is a byte-fallback token in SentencePiece vocabularies (no piece holds one), so
# it never merges with the "{" after it.
_ANSWER_SENTINEL = "\n"


class AnswerTokenizationError(ValueError):
    """The tokenizer merged the sentinel into the answer: its ids would not be the answer's alone."""


def answer_token_ids(tokenizer, answer: str) -> list[int]:
    """Token ids of ``answer`` as the model must produce it right after ``[/INST]``: no leading space.

    A SentencePiece tokenizer with a dummy prefix (Mistral's) encodes ``{"handle"…`` alone as
    ``▁{"`` …; serving constrains the answer to the JSON schema (llama.cpp's grammar, Ollama's
    ``format``), whose first character is ``{``, so a model trained on ``▁{"`` would be forced, on
    every request, onto a first token it never produced there. Training on the answer without the
    prefix teaches what serving allows. The prompt's ids are unchanged (prompt_token_ids).
    """
    prefix = tokenizer(_ANSWER_SENTINEL, add_special_tokens=False)["input_ids"]
    ids = tokenizer(_ANSWER_SENTINEL + answer, add_special_tokens=False)["input_ids"]
    if ids[: len(prefix)] != prefix:
        raise AnswerTokenizationError("the tokenizer merges a newline with the answer's first characters")
    return ids[len(prefix) :]


def prompt_text(tokenizer, instruction: str) -> str:
    return tokenizer.apply_chat_template(chat_messages(instruction), add_generation_prompt=True, tokenize=False)
