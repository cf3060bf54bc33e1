"""What the program reads from the account before it declares any resource: the host's placement
(a private subnet whose zone offers its instance type) and the private subnets' paths to the AWS
APIs the Lambdas call. Each refusal is a named error of `pulumi preview`, and since nothing has been
declared yet, even `pulumi up --skip-preview` creates nothing for a stack that cannot work."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi_aws as aws

from infra import inference_host, vpc_access
from infra.config import StackConfig


@dataclass(frozen=True)
class Preflight:
    region: str
    host_subnet_id: str
    interface_services: tuple[str, ...]  # vpc_access.interface_services(): what the VPC's Lambdas call


def run(config: StackConfig) -> Preflight:
    region = aws.get_region().region
    services = vpc_access.interface_services(config.dataset.in_vpc)
    vpc_access.check(config.network, region, services)
    return Preflight(region, inference_host.placement(config.host, config.network), services)
