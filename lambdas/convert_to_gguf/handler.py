"""ConvertToGGUF Lambda (container image, 10,240 MB, 900 s): base model + adapter -> GGUF on S3.

Event: {"base_model_uri", "adapter_uri", "out_uri", "quantization"?: "q4_k_m"}; every URI an s3://.
Returns the <out>.json description (sha256, size, tensor types, sources). Refuses up front with
ModelTooLargeForLambda when the estimate says the export cannot finish in the time left.
"""

from __future__ import annotations

import dataclasses
import os

from aws_lambda_powertools import Logger

from lambdas import settings as lambda_settings
from pipeline import contracts, storage
from pipeline.errors import InvalidArgument
from pipeline.gguf import convert, quant

logger = Logger(service="convert-to-gguf")
# Seconds kept back for writing <out>.json and returning.
RESERVE_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class Settings:
    memory_mb: int = lambda_settings.env(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", contracts.LAMBDA_MAX_MEMORY_MB, lambda_settings.positive_int
    )  # set by Lambda itself


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    uris = {}
    for key in ("base_model_uri", "adapter_uri", "out_uri"):
        value = event.get(key)
        if not isinstance(value, str) or not storage.is_s3(value):
            raise InvalidArgument(f"{key} must be an s3:// URI, got {value!r}")
        uris[key] = value
    try:
        output = quant.OutputType(event.get("quantization") or quant.OutputType.Q4_K_M.value)
    except ValueError:
        raise InvalidArgument(f"quantization must be one of {', '.join(t.value for t in quant.OutputType)}") from None
    seconds_left = context.get_remaining_time_in_millis() / 1000 - RESERVE_SECONDS
    description = convert.export_gguf(
        uris["base_model_uri"],
        uris["adapter_uri"],
        uris["out_uri"],
        output,
        threads=os.cpu_count() or 1,
        progress=False,
        limits=(seconds_left, settings.memory_mb),
    )
    # Run GGUFs expire after the stack's ggufRetentionDays unless promotion re-tags them.
    storage.set_tags(uris["out_uri"], {contracts.RETENTION_TAG: contracts.RETENTION_EXPIRING})
    logger.info("gguf written", extra=description)
    return description
