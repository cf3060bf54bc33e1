"""The Pulumi program: reads the stack's configuration once, wires the components of infra/ and
exports what operators need. Resources are declared in infra/, never here."""

import pulumi

from infra import config as stack_config
from infra import iam, preflight
from infra.conversion import GgufConversion, GgufConversionArgs
from infra.dataset import DatasetFunctions, DatasetFunctionsArgs
from infra.images import ContainerImages, ContainerImagesArgs
from infra.inference_host import OllamaHost, OllamaHostArgs
from infra.orchestration import PipelineOrchestration, PipelineOrchestrationArgs, StageFunctions
from infra.schedule import WeeklySchedule, WeeklyScheduleArgs
from infra.scoring import ScoringFunction, ScoringFunctionArgs
from infra.serving import ModelLifecycleFunctions, ModelLifecycleFunctionsArgs
from infra.storage import ArtifactStorage, ArtifactStorageArgs
from infra.training import TrainingJobSpec, TrainingJobSpecArgs
from infra.vpc_access import VpcApiAccess, VpcApiAccessArgs

config = stack_config.load()
# Read from the account before anything is declared: a stack that cannot work creates nothing.
checked = preflight.run(config)
context = iam.StackContext(iam.current_account(), config.log_retention_days, config.storage.kms_key_arn)

storage = ArtifactStorage("artifacts", ArtifactStorageArgs(config.storage))
bucket = dict(bucket_name=storage.bucket.bucket, bucket_arn=storage.bucket.arn)
images = ContainerImages("images", ContainerImagesArgs(config.images, context.kms_key_arn))
dataset = DatasetFunctions("dataset", DatasetFunctionsArgs(config.dataset, config.network, context=context, **bucket))
training = TrainingJobSpec("training", TrainingJobSpecArgs(config.training, image_uri=images.training_image_uri, context=context, **bucket))
conversion = GgufConversion(
    "conversion",
    GgufConversionArgs(
        images.conversion_image_uri, storage.bucket.arn, training.base_model_uri, context, memory_mb=config.serving.conversion_memory_mb
    ),
)
host = OllamaHost("ollama", OllamaHostArgs(config.host, config.network, context, subnet_id=checked.host_subnet_id))
serving = ModelLifecycleFunctions(
    "serving",
    ModelLifecycleFunctionsArgs(
        config.serving, config.network, host.endpoint, host.client_security_group.id, host.instance.id, context=context, **bucket
    ),
)
scoring = ScoringFunction(
    "scoring",
    ScoringFunctionArgs(
        config.serving,
        config.network,
        host.endpoint,
        host.client_security_group.id,
        layer_arn=serving.layer_arn,
        host_instance_id=host.instance.id,
        context=context,
        **bucket,
    ),
)
vpc_clients = [host.client_security_group.id, *([dataset.security_group.id] if dataset.security_group else [])]
vpc_access = VpcApiAccess("vpc-api", VpcApiAccessArgs(config.network, checked.region, checked.interface_services, vpc_clients))
orchestration = PipelineOrchestration(
    "pipeline",
    PipelineOrchestrationArgs(
        functions=StageFunctions(
            GenerateDatasetFunctionArn=dataset.generate.function.arn,
            ValidateDataFunctionArn=dataset.validate.function.arn,
            ConvertToGgufFunctionArn=conversion.function.arn,
            DeployModelFunctionArn=serving.deploy.function.arn,
            ValidateModelFunctionArn=serving.validate.function.arn,
            PromoteModelFunctionArn=serving.promote.function.arn,
            RollbackModelFunctionArn=serving.rollback.function.arn,
            RecordRunFunctionArn=serving.record.function.arn,
        ),
        training_values=training.values,
        sagemaker_role_arn=training.role.arn,
        training_job_prefix=config.training.job_prefix,
        bucket_name=storage.bucket.bucket,
        host_instance_id=host.instance.id,
        keep_host_running=config.host.keep_running,
        custom_model_share=config.serving.custom_model_share,
        quantization=config.serving.quantization,
        alert_email=config.alert_email,
        context=context,
    ),
)
schedule = WeeklySchedule("schedule", WeeklyScheduleArgs(config.schedule, orchestration.state_machine.arn))

pulumi.export("artifact_bucket", storage.bucket.bucket)
pulumi.export("base_model_uri", training.base_model_uri)
pulumi.export("state_machine_arn", orchestration.state_machine.arn)
pulumi.export("state_machine_console_url", orchestration.console_url)
pulumi.export("ollama_instance_id", host.instance.id)
pulumi.export("ollama_private_endpoint", host.endpoint)
pulumi.export("schedule_name", schedule.schedule.name)
pulumi.export("ecr_repositories", {key: repo.repository_url for key, repo in images.repositories.items()})
pulumi.export("training_image_uri", images.training_image_uri)
# `pipeline train --sagemaker` starts ad-hoc jobs from this: the role, image, bucket and every other
# setting of the state machine's StartTraining (pipeline/training/job_spec.py).
pulumi.export("training_job", training.job_output)
pulumi.export("training_role_arn", training.role.arn)
pulumi.export("conversion_image_uri", images.conversion_image_uri)
pulumi.export("failure_topic_arn", orchestration.topic.arn)
pulumi.export("score_profiles_function_arn", scoring.score.function.arn)
