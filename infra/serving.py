"""DeployModel, ValidateModel, PromoteModel and RollbackModel: zip Lambdas in the Ollama host's VPC,
members of the host's client security group (the only group, besides configured ones, that reaches
port 11434). RecordRun, which writes the run history and talks to S3 only, runs outside the VPC."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from infra import functions, iam, packaging, storage
from infra.config import ModelServingConfig, NetworkConfig
from pipeline import contracts

# Deploy streams a 4-8 GB GGUF from S3 into Ollama's blob API: 2 GB gives a full vCPU and the
# network share with it. Validate scores a few hundred profiles and draws three plots.
DEPLOY_MEMORY_MB, DEPLOY_TIMEOUT_S = 2048, 900
VALIDATE_MEMORY_MB, VALIDATE_TIMEOUT_S = 2048, 900
# DeployModel waits this long for a woken host, then fails as HostStarting (retried): what is left
# of its timeout streams the GGUF (4.4 GB at S3's ~100 MB/s to one Lambda: about a minute).
DEPLOY_HOST_WAKE_WAIT_S = 120
POINTER_MEMORY_MB, POINTER_TIMEOUT_S = 512, 300  # promote / rollback: a few small API calls


@dataclass
class ModelLifecycleFunctionsArgs:
    config: ModelServingConfig
    network: NetworkConfig
    ollama_url: pulumi.Input[str]
    client_security_group_id: pulumi.Input[str]
    host_instance_id: pulumi.Input[str]  # DeployModel wakes it (the host on demand)
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    context: iam.StackContext


class ModelLifecycleFunctions(pulumi.ComponentResource):
    def __init__(self, name: str, args: ModelLifecycleFunctionsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:serving:ModelLifecycleFunctions", name, None, opts)
        layer = functions.dependency_layer(f"{name}-deps", packaging.SERVING_LAYER, args.bucket_name, self)
        self.layer_arn = layer.arn  # ScoreProfiles runs on the same dependencies
        code = packaging.archive(packaging.code_directory())
        network = functions.Network(args.network.private_subnet_ids, [args.client_security_group_id])
        environment = {"OLLAMA_URL": args.ollama_url, "ARTIFACT_BUCKET": args.bucket_name, "MODEL_NAME": args.config.model_name}

        def access(read: list[str], write: Sequence[str] = ()):  # on the artifact bucket
            return pulumi.Output.from_input(args.bucket_arn).apply(
                lambda arn: iam.s3_access("Artifacts", arn, read=read, write=write) + iam.kms_use("BucketKey", args.context.kms_key_arn)
            )

        wake = pulumi.Output.all(args.context.account, args.host_instance_id).apply(
            lambda values: iam.host_wake(values[0], values[1], args.context.kms_key_arn)
        )
        common: dict[str, Any] = dict(parent=self, context=args.context, code=code, layers=[layer.arn], network=network)
        self.deploy = functions.declare(
            functions.FunctionSpec(
                "deploy_model",
                "DeployModel: the run's GGUF into Ollama as a candidate tag",
                DEPLOY_MEMORY_MB,
                DEPLOY_TIMEOUT_S,
                pulumi.Output.all(access(read=[contracts.ANY_RUN], write=[contracts.RUN_MODELFILE_KEY]), wake).apply(
                    lambda values: [*values[0], *values[1]]
                ),
                {
                    **environment,
                    "HOST_INSTANCE_ID": args.host_instance_id,
                    "HOST_WAKE_WAIT_SECONDS": str(DEPLOY_HOST_WAKE_WAIT_S),
                    "POWERTOOLS_SERVICE_NAME": "deploy-model",
                },
            ),
            **common,
        )
        self.validate = functions.declare(
            functions.FunctionSpec(
                "validate_model",
                "ValidateModel: the candidate against the quality gates; report to runs/<run_id>/report/",
                VALIDATE_MEMORY_MB,
                VALIDATE_TIMEOUT_S,
                # The pointer: the model in production is the champion, and is shadowed (its results and history line).
                access(
                    read=[contracts.ANY_RUN, contracts.POINTER_KEYS],
                    write=[contracts.RUN_REPORT_KEYS, contracts.RUN_SHADOW_KEYS, contracts.RUN_INDEX_KEY],
                ),
                {
                    **environment,
                    "QUALITY_GATES": json.dumps(args.config.quality_gates, sort_keys=True),
                    "SHADOW_DROP_ALERT": f"{args.config.shadow_drop_alert:g}",
                    "VALIDATION_CONCURRENCY": str(args.config.validation_concurrency),
                    "MPLCONFIGDIR": "/tmp/matplotlib",
                    "POWERTOOLS_SERVICE_NAME": "validate-model",
                },
            ),
            **common,
        )
        self.promote = functions.declare(
            functions.FunctionSpec(
                "promote_model",
                "PromoteModel: the candidate becomes production; then models/current.json",
                POINTER_MEMORY_MB,
                POINTER_TIMEOUT_S,
                pulumi.Output.all(
                    access(read=[contracts.ANY_RUN, contracts.POINTER_KEYS], write=[contracts.POINTER_KEYS]), args.bucket_arn
                ).apply(lambda values: [*values[0], storage.gguf_retention_tagging(values[1])]),
                {**environment, "POWERTOOLS_SERVICE_NAME": "promote-model"},
            ),
            **common,
        )
        self.rollback = functions.declare(
            functions.FunctionSpec(
                "rollback_model",
                "Rollback: remove the candidate; production stays as models/current.json names it",
                POINTER_MEMORY_MB,
                POINTER_TIMEOUT_S,
                access(read=[contracts.ANY_RUN, contracts.POINTER_KEYS]),
                {**environment, "POWERTOOLS_SERVICE_NAME": "rollback-model"},
            ),
            **common,
        )
        self.record = functions.declare(
            functions.FunctionSpec(
                "record_run",
                "RecordRun: every run's line in the history (runs/index.jsonl) and its summary",
                POINTER_MEMORY_MB,
                POINTER_TIMEOUT_S,
                access(read=[contracts.ANY_RUN, contracts.POINTER_KEYS], write=[contracts.RUN_INDEX_KEY]),
                {"ARTIFACT_BUCKET": args.bucket_name, "POWERTOOLS_SERVICE_NAME": "record-run"},
            ),
            parent=self,
            context=args.context,
            code=code,
            layers=[layer.arn],
        )
        self.register_outputs(
            {
                stage: deployed.function.arn
                for stage, deployed in (
                    ("deploy_model_arn", self.deploy),
                    ("validate_model_arn", self.validate),
                    ("promote_model_arn", self.promote),
                    ("rollback_model_arn", self.rollback),
                    ("record_run_arn", self.record),
                )
            }
        )
