"""ScoreProfiles Lambda (in the Ollama host's VPC): the orchestrator's scorer calls it with a batch.

Environment: OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME?, SCORING_CONCURRENCY? (requests in flight,
default 4), SCORING_TIMEOUT_SECONDS? (per request, default 60), SCORING_MAX_BATCH? (default 100),
HOST_INSTANCE_ID? (the host on demand: started when stopped, waited for HOST_WAKE_WAIT_SECONDS,
default 60; not ready by then -> every profile answers failure "host_starting"), CUSTOM_MODEL_SHARE?
(percent of profiles the custom model scores, by a stable hash of twitter_id; default 0: the
teacher scores all, the migration's start), TEACHER_AUDIT_SHARE? (percent of the routed profiles
flagged ``audit: true``, by another stable hash: the orchestrator asks its teacher for those too, so
monitoring and training data keep teacher labels at any share; default 5).
Event: {"profiles": [{"twitter_id", "username", "display_name"?, "bio"?, "created_at"?,
"follower_count"?, "location"?}, ...]} - the source table's columns.
Returns {"model", "run_id", "results": [one per profile, in order: {twitter_id, handle, score,
reason, latency_s, model, run_id, failure, detail, audit, route}], "summary": {profiles, scored,
failed, latency_p50_s, latency_p95_s, outside_share, share, audited, to_teacher}}. ``route`` is "custom" (scored here)
or "teacher": outside the share, or a fallback whose ``failure`` says why (invalid_profile,
host_starting, host_unavailable, timeout, model_not_found, request_refused, invalid_answer,
model_mismatch: the production tag's manifest digest is not the one the pointer promoted); the
orchestrator scores those with its teacher, so no profile is lost. The batch answers within the
function's time (context.get_remaining_time_in_millis, less RESPONSE_RESERVE_S): a slow host's
unfinished profiles answer ``timeout``, never a Lambda timeout of the whole batch. A 200 that is
not Ollama's answer is ``request_refused`` for its profile. Errors by name (the whole batch):
InvalidArgument (no list of profiles, or more than SCORING_MAX_BATCH).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from lambdas import settings as lambda_settings
from pipeline.errors import InvalidArgument
from pipeline.scoring import production, routing
from pipeline.serving import host, lifecycle
from pipeline.serving.ollama import OllamaClient, Timeouts

# Kept from the function's time for the summary, the metrics and the answer: the requests stop this
# long before Lambda would, and the profiles not scored by then answer "timeout" (route teacher).
RESPONSE_RESERVE_S = 5.0

logger = Logger(service="score-profiles")
metrics = Metrics(namespace="ResearcherScorer", service="score-profiles")


@dataclasses.dataclass(frozen=True)
class Settings(lambda_settings.HostOnDemandSettings):
    concurrency: int = lambda_settings.env("SCORING_CONCURRENCY", 4, lambda_settings.positive_int)
    timeout_s: int = lambda_settings.env("SCORING_TIMEOUT_SECONDS", 60, lambda_settings.positive_int)
    max_batch: int = lambda_settings.env("SCORING_MAX_BATCH", 100, lambda_settings.positive_int)
    # Gradual migration: the share of profiles the custom model scores (the stack's customModelShare).
    custom_model_share: float = lambda_settings.env("CUSTOM_MODEL_SHARE", 0.0, routing.parse_share)
    # The audit slice: this share of the routed profiles answers ``audit: true`` (the stack's teacherAuditShare).
    teacher_audit_share: float = lambda_settings.env("TEACHER_AUDIT_SHARE", routing.DEFAULT_AUDIT_SHARE, routing.parse_audit_share)


def _profiles(event: dict, max_batch: int) -> list:
    profiles = event.get("profiles") if isinstance(event, dict) else None
    if not isinstance(profiles, list) or not profiles:
        raise InvalidArgument('the event must be {"profiles": [...]}, a non-empty list of profiles')
    if len(profiles) > max_batch:
        raise InvalidArgument(f"{len(profiles)} profiles in one batch, at most {max_batch}: split the batch")
    return profiles


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    profiles = _profiles(event, settings.max_batch)
    config = settings.serving
    pointer = lifecycle.read_pointer(settings.artifact_root, config)
    run_id = pointer.get("run_id") if pointer else None
    # What was promoted: the production tag is verified against it before scoring (model_mismatch).
    # A pointer written before promotions recorded it has none; the next promotion adds it.
    digest = pointer.get(lifecycle.OLLAMA_DIGEST_KEY) if pointer else None
    with contextlib.ExitStack() as stack:
        wake = None
        if settings.host_instance_id:  # the host on demand: started when stopped, waited for (bounded)
            wake = stack.enter_context(host.on_demand(settings.host_instance_id, settings.ollama_url, wait_s=settings.host_wake_wait_s))
        deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - RESPONSE_RESERVE_S
        client = stack.enter_context(OllamaClient(settings.ollama_url, timeouts=Timeouts(request_s=settings.timeout_s), deadline=deadline))
        results = production.score_batch(
            profiles,
            client,
            model=config.production,
            run_id=run_id,
            concurrency=settings.concurrency,
            share=settings.custom_model_share,
            wake=wake,
            expected_digest=digest if isinstance(digest, str) else None,
            audit_share=settings.teacher_audit_share,
        )
    summary = production.summarize(results, settings.custom_model_share)
    metrics.add_metric(name="CustomModelShare", unit=MetricUnit.Percent, value=summary.share)
    metrics.add_metric(name="ProfilesScored", unit=MetricUnit.Count, value=summary.scored)
    metrics.add_metric(name="ProfilesToTeacher", unit=MetricUnit.Count, value=summary.to_teacher)
    metrics.add_metric(name="ProfilesOutsideShare", unit=MetricUnit.Count, value=summary.outside_share)
    metrics.add_metric(name="ProfilesAudited", unit=MetricUnit.Count, value=summary.audited)
    for reason, count in summary.failed.items():  # fallbacks to the teacher, by reason
        metrics.add_metric(name=f"ProfilesFailed_{reason}", unit=MetricUnit.Count, value=count)
    logger.info("batch scored", extra={"summary": summary.to_json(), "run_id": run_id})
    return {"model": config.production, "run_id": run_id, "results": [r.to_json() for r in results], "summary": summary.to_json()}
