"""The SageMaker training job specification and its execution role.

No training job is a resource here (DESIGN deviation 4): the state machine's StartTraining creates
one per execution from these values. The job runs with network isolation: SageMaker itself moves
the channels (training, base_model), the adapter output and the checkpoints with this role.

KMS, where configured: the bucket's default encryption applies the key to everything the job writes
(adapter, checkpoints) and the role may use the key; no VolumeKmsKeyId, because g4dn/g5/g6
instances train on local NVMe instance storage, for which SageMaker refuses a volume key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from infra import iam
from infra.config import TrainingConfig
from pipeline import contracts
from pipeline.training import job_spec

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def default_base_model_uri(bucket: str) -> str:
    return f"s3://{bucket}/{contracts.BASE_MODEL_PREFIX}"


def repository_arn(image_uri: str, partition: str) -> str:
    """<account>.dkr.ecr.<region>.amazonaws.com/<repo>[:tag|@digest] -> the repository's ARN."""
    registry, _, path = image_uri.partition("/")
    account, _, rest = registry.partition(".dkr.ecr.")
    region = rest.split(".", 1)[0]
    repository = path.split("@", 1)[0].split(":", 1)[0]
    return f"arn:{partition}:ecr:{region}:{account}:repository/{repository}"


@dataclass
class TrainingJobSpecArgs:
    config: TrainingConfig
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    image_uri: pulumi.Input[str]
    context: iam.StackContext


class TrainingJobSpec(pulumi.ComponentResource):
    """``role`` plus ``values``: the state machine's Training* placeholders."""

    def __init__(self, name: str, args: TrainingJobSpecArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:training:TrainingJobSpec", name, None, opts)
        config = args.config
        self.base_model_uri = (
            pulumi.Output.from_input(config.base_model_s3_uri)
            if config.base_model_s3_uri
            else pulumi.Output.from_input(args.bucket_name).apply(default_base_model_uri)
        )

        def statements(values) -> list[iam.Statement]:
            bucket_arn, account, base_model_uri, image_uri = values
            result = iam.s3_access(
                "Artifacts",
                bucket_arn,
                read=[contracts.RUN_DATASET_KEYS, contracts.CHECKPOINT_KEYS],
                write=[contracts.RUN_TRAINING_KEYS, contracts.CHECKPOINT_KEYS],
            )
            result += iam.base_model_read(base_model_uri, bucket_arn, account.partition)
            result += [
                iam.Statement(
                    "PullTrainingImage",
                    ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    [repository_arn(image_uri, account.partition)],
                ),
                iam.Statement("EcrLogin", ["ecr:GetAuthorizationToken"], ["*"]),
                iam.Statement(
                    "TrainingLogs",
                    ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    [account.arn("logs", f"log-group:{TRAINING_LOG_GROUP}"), account.arn("logs", f"log-group:{TRAINING_LOG_GROUP}:*")],
                ),
                iam.Statement(
                    "TrainingMetrics",
                    ["cloudwatch:PutMetricData"],
                    ["*"],
                    {"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}},
                ),
                *iam.kms_use("ArtifactKey", args.context.kms_key_arn),
            ]
            return result

        self.role, self.policy = iam.service_role(
            f"{name}-sagemaker",
            "sagemaker.amazonaws.com",
            pulumi.Output.all(args.bucket_arn, args.context.account, self.base_model_uri, args.image_uri).apply(statements),
            self,
            "SageMaker training jobs of the researcher-scorer pipeline",
        )
        # The one job specification (pipeline/training/job_spec.py): StartTraining's Parameters and
        # the stack's training_job output, which `pipeline train --sagemaker` builds its jobs from.
        self.settings = pulumi.Output.all(self.role.arn, args.image_uri, args.bucket_name, self.base_model_uri).apply(
            lambda v: job_spec.JobSettings(
                role_arn=v[0],
                image_uri=v[1],
                bucket=v[2],
                base_model_uri=v[3],
                instance_type=config.instance_type,
                volume_size_gb=config.volume_size_gb,
                max_runtime_seconds=config.max_runtime_seconds,
                max_wait_seconds=config.max_wait_seconds,
                job_prefix=config.job_prefix,
                hyperparameters=dict(config.hyperparameters),
            )
        )
        self.job_output = self.settings.apply(job_spec.JobSettings.as_output)
        self.values: dict[str, pulumi.Input[Any]] = {
            "StartTrainingParameters": self.settings.apply(job_spec.state_machine_parameters),
            "TrainingJobPrefix": config.job_prefix,
            "TrainingPollSeconds": config.poll_seconds,
            "BaseModelS3Uri": self.base_model_uri,  # ConvertToGGUF merges the adapter into it
        }
        self.register_outputs({"role_arn": self.role.arn, "base_model_uri": self.base_model_uri, "training_job": self.job_output})
