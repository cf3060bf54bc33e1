"""Fill the state machine definition's ``${Placeholders}`` (statemachine/*.asl.json).

Plain Python, no Pulumi: the orchestration component calls it with resolved values, tests call it
with fixed ones. A placeholder that is a whole JSON string (``"${StartTrainingParameters}"``) becomes
the value's JSON (a number, list, object or boolean); one inside a longer string is replaced by
text. Every placeholder must be given a value, and every value must be used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFINITION = Path(__file__).resolve().parents[1] / "statemachine" / "training_pipeline.asl.json"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")
WHOLE_VALUE = re.compile(r'"\$\{([A-Za-z][A-Za-z0-9]*)\}"')


# Step Functions ends a Standard execution that passes 25,000 history events (Step Functions quotas).
# The training loop is the only part whose length a setting decides: each poll is
# WaitForTraining (entered, exited), CheckStatus (entered, scheduled, started, succeeded, exited)
# and TrainingDone (entered, exited). Everything else, every Retry of every state spent, stays
# under EVENTS_OUTSIDE_TRAINING_LOOP.
HISTORY_EVENT_LIMIT = 25_000
TRAINING_LOOP = {"WaitForTraining": "Wait", "CheckStatus": "Task", "TrainingDone": "Choice"}
EVENTS_PER_STATE = {"Wait": 2, "Task": 5, "Choice": 2}
EVENTS_PER_TRAINING_POLL = sum(EVENTS_PER_STATE[kind] for kind in TRAINING_LOOP.values())
EVENTS_OUTSIDE_TRAINING_LOOP = 2_000


def least_training_poll_seconds(max_wait_seconds: int) -> int:
    """The shortest WaitForTraining interval that keeps an execution whose training job runs its
    whole MaxWaitTimeInSeconds under the history limit."""
    polls_allowed = (HISTORY_EVENT_LIMIT - EVENTS_OUTSIDE_TRAINING_LOOP) // EVENTS_PER_TRAINING_POLL - 1
    return -(-max_wait_seconds // polls_allowed)  # ceiling


class DefinitionError(ValueError):
    """A placeholder has no value (or a value has no placeholder, or cannot go where it is)."""


def placeholders(text: str | None = None) -> set[str]:
    return set(PLACEHOLDER.findall(DEFINITION.read_text() if text is None else text))


def render(values: Mapping[str, Any], text: str | None = None) -> str:
    """The definition with every placeholder filled; a JSON string ready for Step Functions."""
    text = DEFINITION.read_text() if text is None else text
    names = placeholders(text)
    missing, unused = sorted(names - set(values)), sorted(set(values) - names)
    if missing or unused:
        raise DefinitionError(f"state machine placeholders without values: {missing}; values without placeholders: {unused}")
    text = WHOLE_VALUE.sub(lambda match: json.dumps(values[match.group(1)]), text)

    def inline(match: re.Match) -> str:
        value = values[match.group(1)]
        if not isinstance(value, str):
            raise DefinitionError(f"${{{match.group(1)}}} is inside a string: it needs a string, got {type(value).__name__}")
        return json.dumps(value)[1:-1]  # escaped for its place inside a JSON string

    text = PLACEHOLDER.sub(inline, text)
    json.loads(text)  # still one valid JSON document
    return text
