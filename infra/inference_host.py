"""The Ollama host: one GPU instance in a private subnet, reachable on Ollama's port only from the
serving Lambdas' client group and the configured groups/CIDRs; administered through SSM (no key
pair, no SSH, no public address)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import functions, iam, user_data
from infra.config import HostConfig, NetworkConfig

OLLAMA_PORT = user_data.OllamaHostSettings.port
# IMDSv2 only, one hop: Ollama runs on the host itself, no container needs the metadata service.
METADATA_HOP_LIMIT = 1


class HostPlacementError(ValueError):
    """No configured subnet lies in an Availability Zone that offers the host's instance type."""


def host_subnet(subnet_ids: Sequence[str], zones: Sequence[str], offered_zones: Sequence[str], instance_type: str) -> str:
    """The first of ``subnet_ids`` (in ``zones``, one each) whose zone offers ``instance_type``: g4dn
    is not offered in every zone, and EC2 refuses a launch there (Unsupported) only at `pulumi up`."""
    for subnet, zone in zip(subnet_ids, zones, strict=True):
        if zone in offered_zones:
            return subnet
    placed = ", ".join(f"{subnet} ({zone})" for subnet, zone in zip(subnet_ids, zones, strict=True))
    raise HostPlacementError(
        f"{instance_type} is not offered in the zone of any privateSubnetIds: {placed}; "
        f"offered in {', '.join(sorted(offered_zones)) or 'no zone of this region'} - add a private subnet there"
    )


def placement(config: HostConfig, network: NetworkConfig) -> str:
    """The host's subnet, read from the account (DescribeInstanceTypeOfferings, DescribeSubnets) by
    the program's preflight, before anything is declared."""
    offerings = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=[config.instance_type])],
    )
    zones = [aws.ec2.get_subnet(id=subnet).availability_zone for subnet in network.private_subnet_ids]
    return host_subnet(network.private_subnet_ids, zones, offerings.locations, config.instance_type)


@dataclass
class OllamaHostArgs:
    config: HostConfig
    network: NetworkConfig
    context: iam.StackContext
    subnet_id: str  # placement(): a private subnet whose zone offers the instance type


class OllamaHost(pulumi.ComponentResource):
    """``instance``, ``endpoint`` (http://<private ip>:11434) and ``client_security_group`` (members
    may call Ollama)."""

    def __init__(self, name: str, args: OllamaHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:inference_host:OllamaHost", name, None, opts)
        config, network = args.config, args.network
        child = pulumi.ResourceOptions(parent=self)

        self.security_group = functions.security_group(
            f"{name}-host", network.vpc_id, "Ollama host: port 11434 from its clients only", self
        )
        self.client_security_group = functions.security_group(
            f"{name}-client", network.vpc_id, "Clients of the Ollama host (serving Lambdas)", self
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-client-to-ollama",
            security_group_id=self.client_security_group.id,
            ip_protocol="tcp",
            from_port=OLLAMA_PORT,
            to_port=OLLAMA_PORT,
            referenced_security_group_id=self.security_group.id,
            description="Ollama API",
            opts=pulumi.ResourceOptions(parent=self.client_security_group),
        )
        sources: list[tuple[str, dict[str, Any]]] = [("client", {"referenced_security_group_id": self.client_security_group.id})]
        sources += [
            (f"group-{i}", {"referenced_security_group_id": group}) for i, group in enumerate(network.ollama_allowed_security_group_ids)
        ]
        sources += [(f"cidr-{i}", {"cidr_ipv4": cidr}) for i, cidr in enumerate(network.ollama_allowed_cidrs)]
        for label, source in sources:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-ollama-from-{label}",
                security_group_id=self.security_group.id,
                ip_protocol="tcp",
                from_port=OLLAMA_PORT,
                to_port=OLLAMA_PORT,
                description="Ollama API",
                **source,
                opts=pulumi.ResourceOptions(parent=self.security_group),
            )

        def statements(account: iam.Account) -> list[iam.Statement]:
            bucket_arn, key = iam.s3_uri_arns(config.ollama.archive_url, account.partition)
            # A staged copy in a bucket encrypted with the stack's key is read through that key.
            return [
                iam.Statement("OllamaArchive", ["s3:GetObject"], [f"{bucket_arn}/{key}"]),
                *iam.kms_use("ArchiveKey", args.context.kms_key_arn, ("kms:Decrypt",)),
            ]

        staged_archive = config.ollama.archive_url.startswith("s3://")
        self.role, _ = iam.service_role(
            f"{name}-host",
            "ec2.amazonaws.com",
            args.context.account.apply(statements) if staged_archive else None,
            self,
            "The Ollama host (SSM management; the staged Ollama archive if any)",
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-host-ssm",
            role=self.role.name,
            policy_arn=args.context.account.apply(lambda a: iam.managed_policy_arn(a.partition, iam.SSM_CORE)),
            opts=pulumi.ResourceOptions(parent=self.role),
        )
        profile = aws.iam.InstanceProfile(f"{name}-host", role=self.role.name, opts=child)
        ami = aws.ssm.get_parameter_output(name=config.ami_parameter)
        self.instance = aws.ec2.Instance(
            f"{name}-host",
            ami=ami.value,
            instance_type=config.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=[self.security_group.id],
            associate_public_ip_address=False,
            iam_instance_profile=profile.name,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=METADATA_HOP_LIMIT
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_type="gp3",
                volume_size=config.root_volume_gb,
                encrypted=True,
                kms_key_id=args.context.kms_key_arn,
                delete_on_termination=True,
            ),
            user_data=user_data.render(config.ollama),
            # Changed host settings update the user data in place (EC2 stops and starts the instance,
            # the per-boot hook re-runs it) and never replace the host with its models' disk.
            user_data_replace_on_change=False,
            # A power-off from inside stops the instance (never terminates it): how the idle host stops
            # itself (infra/user_data/ollama_idle_stop.sh) without any IAM permission.
            instance_initiated_shutdown_behavior="stop",
            tags={"Name": f"{pulumi.get_project()}-{pulumi.get_stack()}-ollama"},
            # A newer AMI release must not replace the host (and the models on its disk).
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami"]),
        )
        self.endpoint = self.instance.private_ip.apply(lambda ip: f"http://{ip}:{OLLAMA_PORT}")
        self.register_outputs(
            {"instance_id": self.instance.id, "endpoint": self.endpoint, "client_security_group_id": self.client_security_group.id}
        )
