"""RecordRun Lambda: the execution's line in the run history (s3://<bucket>/runs/index.jsonl), at
the end of every execution, passed or not, and the one-line summary the notification carries.

Environment: ARTIFACT_BUCKET. Event: {"run_id", "adapter_uri"?, "error"?: {"Error", "Cause"}} -
``error`` is what the state machine caught, for a run that failed before a verdict.
Returns {"run_id", "outcome", "summary", "subject", "shadow_alert"}: the notification's text and
subject, and whether the production model's shadow agreement dropped (the state machine then
notifies a failed run a second time, with the alert). The outcome is read from the artifacts, not trusted from
the event: promoted when the production pointer names the run, rolled back when its report failed
the gates, failed otherwise.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from lambdas import settings as lambda_settings
from pipeline import history, prompt

Settings = lambda_settings.ArtifactSettings  # ARTIFACT_BUCKET
logger = Logger(service="record-run")
MAX_ERROR_CHARS = 500


def _error(event: dict) -> str | None:
    caught = event.get("error")
    if not isinstance(caught, dict):
        return None
    # Execution input and error causes are untrusted text: one clean line, bounded.
    text = f"{prompt.clean_text(caught.get('Error'))}: {prompt.clean_text(caught.get('Cause'))}"
    return text[:MAX_ERROR_CHARS]


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    root = settings.artifact_root
    outcome = history.outcome_of(root, run_id)
    record = history.run_record(
        root,
        run_id,
        outcome=outcome,
        adapter_uri=lambda_settings.optional_text(event, "adapter_uri"),
        error=_error(event),
        origin="aws",
    )
    history.append(root, record)
    result = {
        "run_id": run_id,
        "outcome": outcome,
        "summary": history.summary_line(record),
        "subject": history.notification_subject(record),
        "shadow_alert": history.shadow_alert(record),
    }
    logger.info("run recorded", extra=result)
    return result
