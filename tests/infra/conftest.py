"""Pulumi under mocks (pulumi/examples testing-unit-py): every resource is recorded, none created.

The mocks answer what the providers answer: ids and outputs in the formats pulumi-aws (the Terraform
AWS provider's resource ids: a bucket's id is its name, a topic's and a state machine's their ARN, a
schedule's "<group>/<name>") and pulumi-docker-build (image.go: `ref` is the first tag with
"@sha256:<digest>" appended) report, so that the program is checked against the values it will
really receive; the resources' inputs are what the tests check.
"""

from __future__ import annotations

import hashlib

import pulumi
import pytest

ACCOUNT, REGION, PARTITION = "123456789012", "eu-west-1", "aws"
AMI_ID = "ami-0123456789abcdef0"

# A complete, valid stack configuration (what Pulumi.dev.yaml's example amounts to).
VALID_CONFIG = {
    "vpcId": "vpc-0a1b2c3d4e5f67890",
    "privateSubnetIds": '["subnet-0a1b2c3d4e5f67890", "subnet-0fedcba9876543210"]',
    "databaseSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:researcher-db-AbCdEf",
    "databaseSecurityGroupId": "sg-0123456789abcdef0",
    "ollamaAllowedSecurityGroupIds": '["sg-0fedcba9876543210"]',
    "ollamaAllowedCidrs": '["10.20.0.0/16"]',
    "alertEmail": "ml-oncall@example.com",
    "seedProfilesUri": "s3://researcher-scorer-config/seed-profiles.txt",
    "ollamaArchiveSha256": "5" * 64,
}


def security_group_id(name: str) -> str:
    """The id the mocks give the security group resource ``name``."""
    return f"sg-{hashlib.sha256(name.encode()).hexdigest()[:17]}"


def _arn(service: str, resource: str) -> str:
    return f"arn:{PARTITION}:{service}:{REGION}:{ACCOUNT}:{resource}"


# The zones of VALID_CONFIG's subnets, and where the region offers g4dn.xlarge (tests change these).
SUBNET_ZONES = {"subnet-0a1b2c3d4e5f67890": f"{REGION}a", "subnet-0fedcba9876543210": f"{REGION}b"}


def _route(**target) -> dict:
    """A route as the provider's aws_route_table data source reports it: every target field, empty
    where unused."""
    fields = ("carrierGatewayId", "cidrBlock", "coreNetworkArn", "destinationPrefixListId", "egressOnlyGatewayId", "gatewayId",
              "instanceId", "ipv6CidrBlock", "localGatewayId", "natGatewayId", "networkInterfaceId", "odbNetworkArn",
              "transitGatewayId", "vpcEndpointId", "vpcPeeringConnectionId")  # fmt: skip
    return {name: target.get(name, "") for name in fields}


ROUTE_LOCAL = _route(cidrBlock="10.0.0.0/16", gatewayId="local")
ROUTE_NAT = _route(cidrBlock="0.0.0.0/0", natGatewayId="nat-0123456789abcdef0")
ROUTE_S3_GATEWAY = _route(destinationPrefixListId="pl-6da54004", gatewayId="vpce-0123456789abcdef0")


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.subnet_zones = dict(SUBNET_ZONES)
        self.offered_zones = [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
        # The VPC's route tables (tests change these): the private subnets on the main table, whose
        # default route goes to a NAT gateway, as in a VPC made by the console's "VPC and more".
        self.route_tables = {"rtb-0main000000000000": [ROUTE_LOCAL, ROUTE_NAT]}
        self.subnet_tables: dict[str, str] = {}  # explicit associations; others use the main table
        self.vpc_endpoints: set[str] = set()  # service names of the VPC's existing interface endpoints
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.states: dict[tuple[str, str], dict] = {}  # (type, name) -> the outputs answered

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        resource_id, state = self._answer(args)
        self.states[(args.typ, args.name)] = state
        return resource_id, state

    def _answer(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        name, typ = args.name, args.typ
        physical = state.get("name") or f"{name}-abc123"
        if typ == "aws:s3/bucket:Bucket":
            state.setdefault("bucket", f"{name}-abc123")
            state["arn"] = f"arn:aws:s3:::{state['bucket']}"
            return state["bucket"], state
        elif typ == "aws:iam/role:Role":
            state["name"] = physical
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:role/{physical}"
            return physical, state
        elif typ == "aws:lambda/function:Function":
            state["arn"] = _arn("lambda", f"function:{physical}")
            state["name"] = physical
            state["invokeArn"] = f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{state['arn']}/invocations"
            state["qualifiedArn"] = f"{state['arn']}:$LATEST"
            return physical, state
        elif typ == "aws:lambda/layerVersion:LayerVersion":
            state["layerArn"] = _arn("lambda", f"layer:{state.get('layerName', name)}")
            state["arn"] = f"{state['layerArn']}:1"
            state["version"] = "1"
            return state["arn"], state
        elif typ == "aws:sfn/stateMachine:StateMachine":
            state["arn"] = _arn("states", f"stateMachine:{physical}")
            return state["arn"], state
        elif typ == "aws:sns/topic:Topic":
            state["arn"] = _arn("sns", physical)
            return state["arn"], state
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            state["arn"] = _arn("logs", f"log-group:{physical}")
            return physical, state
        elif typ == "aws:ec2/instance:Instance":
            state["privateIp"] = "10.0.1.23"
            return "i-0123456789abcdef0", state
        elif typ == "aws:ec2/securityGroup:SecurityGroup":
            return security_group_id(name), state
        elif typ == "aws:ecr/repository:Repository":
            state["registryId"] = ACCOUNT
            state["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{physical}"
            state["arn"] = _arn("ecr", f"repository/{physical}")
            return physical, state
        elif typ == "docker-build:index:Image":
            # As the provider reports a pushed image (pulumi-docker-build provider/internal/image.go:
            # Create): digest from the exporter, ref = the first tag with the digest added.
            digest = hashlib.sha256(name.encode()).hexdigest()
            state["digest"] = f"sha256:{digest}"
            state["ref"] = f"{state['tags'][0]}@sha256:{digest}"
            state["contextHash"] = hashlib.sha256(b"context" + name.encode()).hexdigest()
            return f"sha256:{digest}", state
        elif typ == "aws:scheduler/schedule:Schedule":
            state["name"] = physical
            state["arn"] = _arn("scheduler", f"schedule/{state.get('groupName') or 'default'}/{physical}")
            return f"{state.get('groupName') or 'default'}/{physical}", state
        elif typ == "aws:iam/instanceProfile:InstanceProfile":
            state["name"] = physical
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:instance-profile/{physical}"
            return physical, state
        return f"{name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/deployer", "userId": "AIDA", "id": ACCOUNT}
        if args.token == "aws:index/getRegion:getRegion":
            return {
                "region": REGION,
                "name": REGION,
                "id": REGION,
                "endpoint": f"ec2.{REGION}.amazonaws.com",
                "description": "Europe (Ireland)",
            }
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": PARTITION, "dnsSuffix": "amazonaws.com", "id": PARTITION, "reverseDnsPrefix": "com.amazonaws"}
        if args.token == "aws:ssm/getParameter:getParameter":
            return {"name": args.args["name"], "value": AMI_ID, "insecureValue": AMI_ID, "type": "String", "id": args.args["name"]}
        if args.token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            # As DescribeInstanceTypeOfferings reports them through the provider: one row per zone.
            [instance_type] = args.args["filters"][0]["values"]
            return {
                "id": REGION,
                "instanceTypes": [instance_type] * len(self.offered_zones),
                "locations": list(self.offered_zones),
                "locationTypes": ["availability-zone"] * len(self.offered_zones),
                "filters": args.args["filters"],
                "locationType": args.args["locationType"],
            }
        if args.token == "aws:ec2/getSubnet:getSubnet":
            subnet, zone = args.args["id"], self.subnet_zones[args.args["id"]]
            return {
                "id": subnet,
                "arn": f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/{subnet}",
                "availabilityZone": zone,
                "availabilityZoneId": f"euw1-az{ord(zone[-1]) - ord('a') + 1}",
                "vpcId": VALID_CONFIG["vpcId"],
                "cidrBlock": "10.0.1.0/24",
                "state": "available",
                "ownerId": ACCOUNT,
                "mapPublicIpOnLaunch": False,
                "tags": {},
            }
        if args.token == "aws:ec2/getRouteTables:getRouteTables":
            [query] = args.args["filters"]
            if query["name"] == "association.main":
                ids = [table for table in self.route_tables if table.startswith("rtb-0main")]
            else:
                ids = [self.subnet_tables[subnet] for subnet in query["values"] if subnet in self.subnet_tables]
            return {"id": REGION, "ids": ids, "filters": args.args["filters"], "vpcId": args.args["vpcId"], "tags": {}}
        if args.token == "aws:ec2/getRouteTable:getRouteTable":
            table = args.args["routeTableId"]
            return {
                "id": table,
                "routeTableId": table,
                "arn": f"arn:aws:ec2:{REGION}:{ACCOUNT}:route-table/{table}",
                "routes": self.route_tables[table],
                "associations": [],
                "vpcId": VALID_CONFIG["vpcId"],
                "ownerId": ACCOUNT,
                "propagatingVgws": [],
                "tags": {},
            }
        if args.token == "aws:ec2/getVpcEndpoint:getVpcEndpoint":
            service = args.args["serviceName"]
            if service not in self.vpc_endpoints:
                # The invoke fails when no endpoint matches (the provider's SingularDataSourceFindError).
                return {}, [("serviceName", "reading EC2 VPC Endpoint: empty result")]
            return {"id": "vpce-0fedcba987654321f", "serviceName": service, "state": "available", "vpcId": args.args["vpcId"],
                    "vpcEndpointType": "Interface", "privateDnsEnabled": True}  # fmt: skip
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": "mock-token",
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
                "authorizationToken": "bW9jaw==",
                "expiresAt": "2026-11-26T00:00:00Z",
                "id": ACCOUNT,
            }
        return {}

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [resource for resource in self.resources if resource.typ == typ]

    def named(self, typ: str, name: str) -> pulumi.runtime.MockResourceArgs:
        matches = [resource for resource in self.of_type(typ) if resource.name == name]
        assert len(matches) == 1, f"{typ} {name}: {[r.name for r in self.of_type(typ)]}"
        return matches[0]


@pytest.fixture
def mocks() -> RecordingMocks:
    recorder = RecordingMocks()
    pulumi.runtime.set_mocks(recorder, project="researcher-scorer", stack="test", preview=False)
    return recorder


def set_config(values: dict[str, str]) -> None:
    """Stack configuration as `pulumi config set` gives it: strings, with the project prefix."""
    pulumi.runtime.set_all_config({f"researcher-scorer:{key}": value for key, value in values.items()})


PROGRAM = __import__("pathlib").Path(__file__).resolve().parents[2] / "__main__.py"


class Deployment:
    """What one run of the program declared: resources (inputs resolved), their options, exports."""

    def __init__(self, mocks: RecordingMocks):
        self.mocks = mocks
        self.options: dict[str, pulumi.ResourceOptions] = {}
        self.exports: dict[str, object] = {}

    def one(self, typ: str, name: str):
        return self.mocks.named(typ, name).inputs

    def all(self, typ: str):
        return self.mocks.of_type(typ)


def run_program(mocks: RecordingMocks, config: dict[str, str], monkeypatch) -> Deployment:
    """Run __main__.py as `pulumi up` would, under the mocks, with ``config`` as the stack's."""
    import runpy

    set_config(config)
    deployment = Deployment(mocks)
    declared: dict[str, pulumi.Output] = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: declared.__setitem__(name, value))

    def record_options(args):
        deployment.options[args.name] = args.opts
        return None

    @pulumi.runtime.test
    def up():
        pulumi.runtime.register_stack_transformation(record_options)
        runpy.run_path(str(PROGRAM), run_name="__main__")
        return pulumi.Output.all(**declared).apply(deployment.exports.update)

    up()
    return deployment


@pytest.fixture
def deploy(mocks, monkeypatch):
    return lambda config=VALID_CONFIG: run_program(mocks, config, monkeypatch)
