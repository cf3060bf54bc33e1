"""EventBridge Scheduler: starts the state machine weekly with a fixed input, through a role that may
do nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import iam
from infra.config import ScheduleConfig

# The execution input of a scheduled run: the defaults of every stage (a person starting an
# execution from the console may give the same object, or {}).
SCHEDULED_INPUT = {"trigger": "schedule"}
# A start that fails (throttling, a deploy in progress) is retried for an hour, then dropped; the
# state machine itself refuses a second concurrent execution.
RETRY_ATTEMPTS, RETRY_MAX_AGE_S = 3, 3600


@dataclass
class WeeklyScheduleArgs:
    config: ScheduleConfig
    state_machine_arn: pulumi.Input[str]


class WeeklySchedule(pulumi.ComponentResource):
    def __init__(self, name: str, args: WeeklyScheduleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:schedule:WeeklySchedule", name, None, opts)
        config = args.config
        self.role, self.policy = iam.service_role(
            f"{name}-scheduler",
            "scheduler.amazonaws.com",
            pulumi.Output.from_input(args.state_machine_arn).apply(
                lambda arn: [iam.Statement("StartPipeline", ["states:StartExecution"], [arn])]
            ),
            self,
            "EventBridge Scheduler: start the researcher-scorer pipeline",
        )
        self.schedule = aws.scheduler.Schedule(
            f"{name}-weekly",
            description="Weekly retraining of mistral-researcher",
            schedule_expression=config.expression,
            schedule_expression_timezone=config.timezone,
            state="ENABLED" if config.enabled else "DISABLED",
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            target=aws.scheduler.ScheduleTargetArgs(
                arn=args.state_machine_arn,
                role_arn=self.role.arn,
                input=json.dumps(SCHEDULED_INPUT),
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(
                    maximum_retry_attempts=RETRY_ATTEMPTS, maximum_event_age_in_seconds=RETRY_MAX_AGE_S
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.policy] if self.policy else []),
        )
        self.register_outputs({"schedule_name": self.schedule.name})
