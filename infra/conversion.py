"""ConvertToGGUF: the streaming base + LoRA -> GGUF export as a container-image Lambda at Lambda's
ceiling (10,240 MB, 900 s); memory stays bounded by the largest tensor (DESIGN deviation 2)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra import functions, iam, storage
from pipeline import contracts

EPHEMERAL_STORAGE_MB = 1024  # the tokenizer files only; tensors stream from S3 to S3


@dataclass
class GgufConversionArgs:
    image_uri: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    base_model_uri: pulumi.Input[str]
    context: iam.StackContext
    memory_mb: int = contracts.LAMBDA_MAX_MEMORY_MB  # the stack's conversionMemoryMb


class GgufConversion(pulumi.ComponentResource):
    def __init__(self, name: str, args: GgufConversionArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:conversion:GgufConversion", name, None, opts)

        def statements(values) -> list[iam.Statement]:
            bucket_arn, account, base_model_uri = values
            result = iam.s3_access(
                "Artifacts",
                bucket_arn,
                read=[contracts.RUN_TRAINING_KEYS],
                write=[contracts.RUN_GGUF_KEY, contracts.RUN_GGUF_DESCRIPTION_KEY],
            )
            result.append(storage.gguf_retention_tagging(bucket_arn))
            result += iam.base_model_read(base_model_uri, bucket_arn, account.partition)
            return result + iam.kms_use("ArtifactKey", args.context.kms_key_arn)

        self.deployed = functions.declare(
            functions.FunctionSpec(
                "convert_to_gguf",
                "ConvertToGGUF: base model + LoRA adapter -> quantized GGUF, streamed",
                # pipeline/gguf/budget.py plans the export against the same figures.
                args.memory_mb,
                contracts.LAMBDA_MAX_TIMEOUT_S,
                pulumi.Output.all(args.bucket_arn, args.context.account, args.base_model_uri).apply(statements),
                {"POWERTOOLS_SERVICE_NAME": "convert-to-gguf"},
                image_uri=args.image_uri,
                ephemeral_storage_mb=EPHEMERAL_STORAGE_MB,
            ),
            parent=self,
            context=args.context,
        )
        self.function = self.deployed.function
        self.register_outputs({"function_arn": self.function.arn})
