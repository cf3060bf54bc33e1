"""How the Lambdas in the private subnets reach the AWS APIs they call: checked at preview, or the
interface endpoints created here (createVpcEndpoints).

A Lambda in a private subnet has no route to an AWS API unless the subnet's route table sends it
somewhere: a NAT (or a transit gateway / appliance) for every API, an S3 gateway endpoint for S3
only, or an interface endpoint of the VPC for its own service. Without one, connects are dropped,
not refused (pipeline/aws_clients.py bounds them at run time); this module makes a missing path a
named error of `pulumi preview` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import functions
from infra.config import NetworkConfig

HTTPS_PORT = 443
DEFAULT_ROUTE = "0.0.0.0/0"


class VpcAccessError(ValueError):
    """A private subnet has no path to an AWS API the Lambdas in it call."""


@dataclass(frozen=True)
class SubnetRoutes:
    subnet_id: str
    default_route: bool  # 0.0.0.0/0 to a NAT gateway, transit gateway, instance or network interface
    s3_gateway: bool  # a route to S3's prefix list through a gateway endpoint


def _route_table_id(vpc_id: str, subnet_id: str) -> str:
    """The subnet's route table: its explicit association, else the VPC's main table (EC2 lists no
    association for a subnet on the main table, and the singular data source then fails)."""
    explicit = aws.ec2.get_route_tables(vpc_id=vpc_id, filters=[{"name": "association.subnet-id", "values": [subnet_id]}]).ids
    if explicit:
        return explicit[0]
    [main] = aws.ec2.get_route_tables(vpc_id=vpc_id, filters=[{"name": "association.main", "values": ["true"]}]).ids
    return main


def subnet_routes(vpc_id: str, subnet_id: str) -> SubnetRoutes:
    routes = aws.ec2.get_route_table(route_table_id=_route_table_id(vpc_id, subnet_id)).routes
    default_route = any(
        route.cidr_block == DEFAULT_ROUTE
        and bool(route.nat_gateway_id or route.transit_gateway_id or route.instance_id or route.network_interface_id)
        for route in routes
    )
    s3_gateway = any(route.destination_prefix_list_id and (route.gateway_id or "").startswith("vpce-") for route in routes)
    return SubnetRoutes(subnet_id, default_route, s3_gateway)


def has_interface_endpoint(vpc_id: str, region: str, service: str) -> bool:
    try:
        aws.ec2.get_vpc_endpoint(vpc_id=vpc_id, service_name=f"com.amazonaws.{region}.{service}", state="available")
    except Exception:  # the data source fails when no endpoint matches; that is the answer sought
        return False
    return True


def problems(subnets: Sequence[SubnetRoutes], endpoint_services: Sequence[str], missing_services: Sequence[str]) -> list[str]:
    """What is unreachable: S3 (NAT or gateway endpoint, per subnet) and ``missing_services``, the
    interface APIs (``endpoint_services``) with neither an endpoint nor a NAT in every subnet."""
    found = []
    without_s3 = [s.subnet_id for s in subnets if not (s.default_route or s.s3_gateway)]
    if without_s3:
        found.append(f"{', '.join(without_s3)} reach no S3: add an S3 gateway endpoint to their route tables (free) or a NAT gateway")
    without_nat = [s.subnet_id for s in subnets if not s.default_route]
    if without_nat and missing_services:
        found.append(
            f"{', '.join(without_nat)} have no default route to a NAT and the VPC has no interface endpoint for "
            f"{', '.join(missing_services)} (of {', '.join(endpoint_services)}, which the Lambdas call): "
            "set createVpcEndpoints true, or add a NAT gateway"
        )
    return found


def check(network: NetworkConfig, region: str, endpoint_services: Sequence[str]) -> None:
    """Raise VpcAccessError at preview when a private subnet cannot reach an API the Lambdas call."""
    subnets = [subnet_routes(network.vpc_id, subnet) for subnet in network.private_subnet_ids]
    interface = [] if network.create_vpc_endpoints else list(endpoint_services)
    if all(s.default_route for s in subnets):
        interface = []  # a NAT reaches every API: no endpoint lookups needed
    missing = [service for service in interface if not has_interface_endpoint(network.vpc_id, region, service)]
    found = problems(subnets, endpoint_services, missing)
    if found:
        raise VpcAccessError("privateSubnetIds: " + "; ".join(found) + " (docs/deploy.md, Network)")


def interface_services(dataset_in_vpc: bool) -> tuple[str, ...]:
    """The APIs the Lambdas in the private subnets call besides S3: EC2 (DeployModel and ScoreProfiles
    wake the host) and Secrets Manager (GenerateDataset, when it runs in the VPC)."""
    return ("ec2", "secretsmanager") if dataset_in_vpc else ("ec2",)


@dataclass
class VpcApiAccessArgs:
    network: NetworkConfig
    region: str
    services: Sequence[str]  # interface_services(): the interface APIs the Lambdas in the VPC call
    client_security_group_ids: Sequence[pulumi.Input[str]]  # the Lambdas' groups: HTTPS to the endpoints


class VpcApiAccess(pulumi.ComponentResource):
    """With createVpcEndpoints, one interface endpoint per service with private DNS (the SDKs'
    default hostnames resolve to it) in one private subnet: reachable from every subnet of the VPC,
    billed per endpoint and zone (docs/deploy.md, costs). The paths themselves are checked before
    anything is declared (``check``, from the program's preflight)."""

    def __init__(self, name: str, args: VpcApiAccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:vpc_access:VpcApiAccess", name, None, opts)
        region = args.region
        self.endpoints: dict[str, aws.ec2.VpcEndpoint] = {}
        if args.network.create_vpc_endpoints:
            group = functions.security_group(
                f"{name}-endpoints", args.network.vpc_id, "AWS API interface endpoints: HTTPS from the Lambdas", self
            )
            for i, source in enumerate(args.client_security_group_ids):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-endpoints-from-{i}",
                    security_group_id=group.id,
                    ip_protocol="tcp",
                    from_port=HTTPS_PORT,
                    to_port=HTTPS_PORT,
                    referenced_security_group_id=source,
                    description="AWS APIs over HTTPS",
                    opts=pulumi.ResourceOptions(parent=group),
                )
            for service in args.services:
                self.endpoints[service] = aws.ec2.VpcEndpoint(
                    f"{name}-{service}",
                    vpc_id=args.network.vpc_id,
                    service_name=f"com.amazonaws.{region}.{service}",
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=[args.network.private_subnet_ids[0]],
                    security_group_ids=[group.id],
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.register_outputs({f"{service}_endpoint_id": endpoint.id for service, endpoint in self.endpoints.items()})
