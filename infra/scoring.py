"""ScoreProfiles: the zip Lambda the orchestrator's scorer invokes with a batch of profiles, in the
Ollama host's VPC as a member of its client security group. It reads only the production pointer
(which run is in production) and asks the production tag; its ARN is a stack output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from infra import functions, iam, packaging
from infra.config import ModelServingConfig, NetworkConfig
from pipeline import contracts

# Four requests in flight to one GPU host; a batch of 100 at ~1-2 s each takes well under a minute
# on a warm host, and a cold model load (tens of seconds) fits the timeout.
SCORE_MEMORY_MB, SCORE_TIMEOUT_S = 512, 300
SCORING_CONCURRENCY, SCORING_TIMEOUT_SECONDS, SCORING_MAX_BATCH = 4, 60, 100
# A stopped g4dn boots and loads Ollama in about 1-2 minutes: a batch waits up to this long, then
# answers "host_starting" so that the orchestrator falls back to Claude and sends it again later.
HOST_WAKE_WAIT_SECONDS = 90


@dataclass
class ScoringFunctionArgs:
    config: ModelServingConfig
    network: NetworkConfig
    ollama_url: pulumi.Input[str]
    client_security_group_id: pulumi.Input[str]
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    layer_arn: pulumi.Input[str]  # the serving Lambdas' dependency layer
    host_instance_id: pulumi.Input[str]  # woken when stopped (the host on demand)
    context: iam.StackContext


class ScoringFunction(pulumi.ComponentResource):
    def __init__(self, name: str, args: ScoringFunctionArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:scoring:ScoringFunction", name, None, opts)
        kms = iam.kms_use("BucketKey", args.context.kms_key_arn)

        def statements_for(values) -> list[iam.Statement]:
            bucket_arn, account, instance_id = values
            # The production pointer only (which run is in production): nothing else in the bucket.
            # The host: started when stopped, never stopped from here (it stops itself when idle).
            return [
                *iam.s3_access("ProductionPointer", bucket_arn, read=[contracts.POINTER_KEYS]),
                *kms,
                *iam.host_wake(account, instance_id, args.context.kms_key_arn),
            ]

        statements: Any = pulumi.Output.all(args.bucket_arn, args.context.account, args.host_instance_id).apply(statements_for)
        self.score = functions.declare(
            functions.FunctionSpec(
                "score_profiles",
                "ScoreProfiles: a batch of profiles scored by the production model (the orchestrator's scorer)",
                SCORE_MEMORY_MB,
                SCORE_TIMEOUT_S,
                statements,
                {
                    "OLLAMA_URL": args.ollama_url,
                    "ARTIFACT_BUCKET": args.bucket_name,
                    "MODEL_NAME": args.config.model_name,
                    "SCORING_CONCURRENCY": str(SCORING_CONCURRENCY),
                    "SCORING_TIMEOUT_SECONDS": str(SCORING_TIMEOUT_SECONDS),
                    "SCORING_MAX_BATCH": str(SCORING_MAX_BATCH),
                    "HOST_INSTANCE_ID": args.host_instance_id,
                    "HOST_WAKE_WAIT_SECONDS": str(HOST_WAKE_WAIT_SECONDS),
                    "CUSTOM_MODEL_SHARE": f"{args.config.custom_model_share:g}",
                    "TEACHER_AUDIT_SHARE": f"{args.config.teacher_audit_share:g}",
                    "POWERTOOLS_SERVICE_NAME": "score-profiles",
                    "POWERTOOLS_METRICS_NAMESPACE": "ResearcherScorer",
                },
            ),
            parent=self,
            context=args.context,
            code=packaging.archive(packaging.code_directory()),
            layers=[args.layer_arn],
            network=functions.Network(args.network.private_subnet_ids, [args.client_security_group_id]),
        )
        self.register_outputs({"score_profiles_arn": self.score.function.arn})
