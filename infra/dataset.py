"""GenerateDataset and ValidateData: zip Lambdas (pipeline/ + a layer of Linux wheels, psycopg2-binary
among them), the database password only ever read from Secrets Manager at run time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import functions, iam, packaging
from infra.config import DatasetConfig, NetworkConfig
from pipeline import contracts

# Export of ~1M profiles measured at 56 MiB peak RSS and ~40 s (docs/benchmarks.md); headroom for
# the seed profiles' scoring prompts and a slower database.
GENERATE_MEMORY_MB, GENERATE_TIMEOUT_S = 1024, 900
VALIDATE_MEMORY_MB, VALIDATE_TIMEOUT_S = 1024, 900


@dataclass
class DatasetFunctionsArgs:
    config: DatasetConfig
    network: NetworkConfig
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    context: iam.StackContext


class DatasetFunctions(pulumi.ComponentResource):
    def __init__(self, name: str, args: DatasetFunctionsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:dataset:DatasetFunctions", name, None, opts)
        config = args.config
        layer = functions.dependency_layer(f"{name}-deps", packaging.DATASET_LAYER, args.bucket_name, self)
        code = packaging.archive(packaging.code_directory())

        network = None
        self.security_group = None
        if config.in_vpc:
            self.security_group = functions.security_group(
                f"{name}-lambda", args.network.vpc_id, "GenerateDataset Lambda: to the database and AWS APIs", self
            )
            self._database_path(name, config)
            network = functions.Network(args.network.private_subnet_ids, [self.security_group.id])

        def generate_statements(values) -> list[iam.Statement]:
            bucket_arn, account = values
            # Its dataset; and the shadow set: production's manifest read, the fresh profiles written.
            statements = iam.s3_access(
                "Dataset",
                bucket_arn,
                read=[contracts.POINTER_KEYS, contracts.RUN_DATASET_KEYS],
                write=[contracts.RUN_DATASET_KEYS, contracts.RUN_SHADOW_KEYS],
            )
            statements.append(iam.Statement("DatabaseSecret", ["secretsmanager:GetSecretValue"], [config.database_secret_arn]))
            if config.secret_kms_key_arn:  # a secret under its own CMK: decrypted through Secrets Manager only
                statements.append(
                    iam.Statement(
                        "DatabaseSecretKey",
                        ["kms:Decrypt"],
                        [config.secret_kms_key_arn],
                        {"StringEquals": {"kms:ViaService": f"secretsmanager.{account.region}.amazonaws.com"}},
                    )
                )
            seeds_bucket, seeds_key = iam.s3_uri_arns(config.seed_profiles_uri, account.partition)
            statements += iam.s3_access("SeedProfiles", seeds_bucket, read=[seeds_key])
            return statements + iam.kms_use("BucketKey", args.context.kms_key_arn)

        environment = {
            "ARTIFACT_BUCKET": args.bucket_name,
            "DATABASE_SECRET_ARN": config.database_secret_arn,
            "SEED_PROFILES_URI": config.seed_profiles_uri,
            "MIN_ROWS": str(config.min_rows),
            "DATABASE_SSLMODE": config.ssl_mode,
            "POWERTOOLS_SERVICE_NAME": "generate-dataset",
        }
        common: dict[str, Any] = dict(parent=self, context=args.context, code=code, layers=[layer.arn])
        self.generate = functions.declare(
            functions.FunctionSpec(
                "generate_dataset",
                "GenerateDataset: PostgreSQL -> runs/<run_id>/dataset/ (JSONL splits, manifest)",
                GENERATE_MEMORY_MB,
                GENERATE_TIMEOUT_S,
                pulumi.Output.all(args.bucket_arn, args.context.account).apply(generate_statements),
                environment,
            ),
            network=network,
            **common,
        )
        self.validate = functions.declare(
            functions.FunctionSpec(
                "validate_data",
                "ValidateData: the run's dataset against the training contract",
                VALIDATE_MEMORY_MB,
                VALIDATE_TIMEOUT_S,
                pulumi.Output.from_input(args.bucket_arn).apply(
                    lambda arn: (
                        iam.s3_access("Dataset", arn, read=[contracts.RUN_DATASET_KEYS])
                        + iam.kms_use("BucketKey", args.context.kms_key_arn)
                    )
                ),
                {
                    "ARTIFACT_BUCKET": args.bucket_name,
                    "MIN_SEED_PROFILES": str(config.min_seed_profiles),
                    "MIN_ROWS": str(config.min_rows),
                    "POWERTOOLS_SERVICE_NAME": "validate-data",
                },
            ),
            **common,
        )
        self.register_outputs({"generate_dataset_arn": self.generate.function.arn, "validate_data_arn": self.validate.function.arn})

    def _database_path(self, name: str, config: DatasetConfig) -> None:
        """Egress to the database port; with the database's group known, the matching ingress on it."""
        group = self.security_group
        assert group is not None, "only called for a dataset Lambda in the VPC"
        child = pulumi.ResourceOptions(parent=group)
        if config.database_security_group_id:
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-database-egress",
                security_group_id=group.id,
                ip_protocol="tcp",
                from_port=config.database_port,
                to_port=config.database_port,
                referenced_security_group_id=config.database_security_group_id,
                description="PostgreSQL",
                opts=child,
            )
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-database-ingress",
                security_group_id=config.database_security_group_id,
                ip_protocol="tcp",
                from_port=config.database_port,
                to_port=config.database_port,
                referenced_security_group_id=group.id,
                description="GenerateDataset Lambda of researcher-scorer",
                opts=child,
            )
        else:
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-database-egress",
                security_group_id=group.id,
                ip_protocol="tcp",
                from_port=config.database_port,
                to_port=config.database_port,
                cidr_ipv4="0.0.0.0/0",
                description="PostgreSQL (database group not configured)",
                opts=child,
            )
