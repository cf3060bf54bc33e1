"""The weekly pipeline as a Step Functions state machine (statemachine/training_pipeline.asl.json,
filled by infra/asl.py), its role, its logs and traces, the failure topic and the failed-executions
alarm."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import asl, iam
from pipeline.contracts import RUN_TRAINING_KEYS

# Any failed execution in a 5-minute period raises the alarm (a weekly job: one failure matters).
ALARM_PERIOD_S = 300
LOG_LEVEL = "ERROR"  # failed states with their inputs; ALL would log every payload of every state
# Step Functions' vended logs need the /aws/vendedlogs/ prefix for a log group policy that does not grow.
LOG_GROUP_PREFIX = "/aws/vendedlogs/states/"


def state_machine_name() -> str:
    return f"{pulumi.get_project()}-{pulumi.get_stack()}"


def console_url(region: str, arn: str) -> str:
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/statemachines/view/{arn}"


@dataclass
class StageFunctions:
    """The Lambda ARNs the state machine invokes, by placeholder."""

    GenerateDatasetFunctionArn: pulumi.Input[str]
    ValidateDataFunctionArn: pulumi.Input[str]
    ConvertToGgufFunctionArn: pulumi.Input[str]
    DeployModelFunctionArn: pulumi.Input[str]
    ValidateModelFunctionArn: pulumi.Input[str]
    PromoteModelFunctionArn: pulumi.Input[str]
    RollbackModelFunctionArn: pulumi.Input[str]
    RecordRunFunctionArn: pulumi.Input[str]


@dataclass
class PipelineOrchestrationArgs:
    functions: StageFunctions
    training_values: Mapping[str, pulumi.Input[Any]]  # TrainingJobSpec.values
    sagemaker_role_arn: pulumi.Input[str]
    training_job_prefix: str
    bucket_name: pulumi.Input[str]
    host_instance_id: pulumi.Input[str]
    keep_host_running: bool
    custom_model_share: float  # above 0, ScoreProfiles may use the host: an execution never stops it
    quantization: str
    alert_email: str | None
    context: iam.StackContext


class PipelineOrchestration(pulumi.ComponentResource):
    def __init__(self, name: str, args: PipelineOrchestrationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:orchestration:PipelineOrchestration", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        machine_name = state_machine_name()

        self.topic = aws.sns.Topic(
            f"{name}-failures", display_name="researcher-scorer pipeline runs", kms_master_key_id=args.context.kms_key_arn, opts=child
        )
        if args.alert_email:
            aws.sns.TopicSubscription(
                f"{name}-failures-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=args.alert_email,
                opts=pulumi.ResourceOptions(parent=self.topic),
            )
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"{LOG_GROUP_PREFIX}{machine_name}",
            retention_in_days=args.context.log_retention_days,
            kms_key_id=args.context.kms_key_arn,
            opts=child,
        )
        functions = vars(args.functions)

        def statements(values) -> list[iam.Statement]:
            account, arns, role_arn, instance_id, topic_arn, bucket_name = values
            result = [
                iam.Statement(
                    "InvokeStages", ["lambda:InvokeFunction"], [arn for function_arn in arns for arn in (function_arn, f"{function_arn}:*")]
                ),
                iam.Statement(
                    "TrainingJobs",
                    ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:AddTags"],
                    [account.arn("sagemaker", f"training-job/{args.training_job_prefix.lower()}-*")],
                ),
                iam.Statement(
                    "PassSageMakerRole", ["iam:PassRole"], [role_arn], {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
                ),
                # DeployModel wakes the host; the execution only stops one it found stopped (RestoreHost).
                iam.Statement("StopHost", ["ec2:StopInstances"], [account.arn("ec2", f"instance/{instance_id}")]),
                iam.Statement("DescribeHost", ["ec2:DescribeInstances"], ["*"]),
                iam.Statement("NotifyFailure", ["sns:Publish"], [topic_arn]),  # failures, and promotions (NotifySuccess) too
                # CheckAdapter: is there an adapter under the training job's output (a key name, no content)?
                iam.Statement(
                    "FindAdapter",
                    ["s3:ListBucket"],
                    [f"arn:{account.partition}:s3:::{bucket_name}"],
                    {"StringLike": {"s3:prefix": [RUN_TRAINING_KEYS]}},
                ),
                iam.Statement("OneExecutionAtATime", ["states:ListExecutions"], [account.arn("states", f"stateMachine:{machine_name}")]),
                iam.Statement(
                    "VendedLogDelivery",
                    [
                        "logs:CreateLogDelivery",
                        "logs:GetLogDelivery",
                        "logs:UpdateLogDelivery",
                        "logs:DeleteLogDelivery",
                        "logs:ListLogDeliveries",
                        "logs:PutResourcePolicy",
                        "logs:DescribeResourcePolicies",
                        "logs:DescribeLogGroups",
                    ],
                    ["*"],
                ),
                iam.Statement(
                    "XRayTracing",
                    ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"],
                    ["*"],
                ),
            ]
            # The failures topic is encrypted with the stack's key: publishing needs a data key from it.
            result += iam.kms_use("TopicKey", args.context.kms_key_arn)
            return result

        self.role, self.policy = iam.service_role(
            f"{name}-states",
            "states.amazonaws.com",
            pulumi.Output.all(
                args.context.account,
                list(functions.values()),
                args.sagemaker_role_arn,
                args.host_instance_id,
                self.topic.arn,
                args.bucket_name,
            ).apply(statements),
            self,
            "The researcher-scorer state machine",
        )

        values: dict[str, pulumi.Input[Any]] = {
            **functions,
            **args.training_values,
            "ArtifactBucket": args.bucket_name,
            "NotificationTopicArn": self.topic.arn,
            "OllamaInstanceId": args.host_instance_id,
            "KeepHostRunning": args.keep_host_running,
            "CustomModelShare": args.custom_model_share,
            "Quantization": args.quantization,
        }
        self.definition = pulumi.Output.all(**values).apply(asl.render)
        self.state_machine = aws.sfn.StateMachine(
            f"{name}-state-machine",
            name=machine_name,
            type="STANDARD",
            role_arn=self.role.arn,
            definition=self.definition,
            logging_configuration=aws.sfn.StateMachineLoggingConfigurationArgs(
                log_destination=self.log_group.arn.apply(lambda arn: f"{arn}:*"), include_execution_data=True, level=LOG_LEVEL
            ),
            tracing_configuration=aws.sfn.StateMachineTracingConfigurationArgs(enabled=True),
            # The role's policy must exist first: Step Functions checks log delivery at creation.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.policy] if self.policy else []),
        )
        self.alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-failed-executions",
            alarm_description="An execution of the researcher-scorer pipeline failed (see the failures topic and the state machine's logs)",
            namespace="AWS/States",
            metric_name="ExecutionsFailed",
            dimensions={"StateMachineArn": self.state_machine.arn},
            statistic="Sum",
            period=ALARM_PERIOD_S,
            evaluation_periods=1,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[self.topic.arn],
            opts=child,
        )
        self.console_url = pulumi.Output.all(args.context.account, self.state_machine.arn).apply(lambda v: console_url(v[0].region, v[1]))
        self.register_outputs({"state_machine_arn": self.state_machine.arn, "console_url": self.console_url, "topic_arn": self.topic.arn})
