"""What Cloud Functions (2nd gen) and the Cloud Run service under it refuse, in Google's words.

Two kinds of refusal, as on Google: ``check_request`` raises at once (400 on the create or
patch call: the request itself is wrong), while ``build_error`` and ``service_error`` return the
message a finished operation carries when the build or the Cloud Run revision fails, leaving
the function FAILED. Quantities are Kubernetes-style strings ("1Gi", "512M", "500m", "0.5").
"""

from __future__ import annotations

import ast
import io
import re
import zipfile
from typing import Any

from devtools.control_plane.server import invalid, one_of, require

RUNTIMES = {f"python3{minor}": f"Python 3.{minor}" for minor in range(10, 15)}
INGRESS_SETTINGS = ("ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB")
EGRESS_SETTINGS = ("VPC_CONNECTOR_EGRESS_SETTINGS_UNSPECIFIED", "PRIVATE_RANGES_ONLY", "ALL_TRAFFIC")
_CONNECTOR = re.compile(r"^projects/([^/]+)/locations/([^/]+)/connectors/([^/]+)$")
FUNCTION_ID = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_MEMORY_UNITS = {"k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
                 "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
_QUANTITY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
GI = 1024**3
MI = 1024**2
# Whole CPUs Cloud Run offers and the memory range each allows (its docs' table).
_WHOLE_CPUS = {1: (128 * MI, 4 * GI), 2: (128 * MI, 8 * GI), 4: (2 * GI, 16 * GI), 6: (4 * GI, 24 * GI),
               8: (4 * GI, 32 * GI)}
# Below one CPU, the most memory each fraction may have (the minimum-CPU table, read the other way).
_FRACTION_MEMORY = ((0.583, 1 * GI), (0.333, 512 * MI), (0.1666, 256 * MI), (0.08, 128 * MI))
_CPU_PATH = "spec.template.spec.containers.resources.limits.cpu"
_MEMORY_PATH = "spec.template.spec.containers.resources.limits.memory"


def quantity(text: str, what: str) -> float:
    match = _QUANTITY.match(str(text))
    if not match:
        raise invalid(f"Invalid value for field '{what}': could not parse quantity '{text}'")
    amount, unit = float(match.group(1)), match.group(2)
    if unit == "m":
        return amount / 1000
    return amount * _MEMORY_UNITS.get(unit or "", 1)


def _size(value: float) -> str:
    return f"{value / GI:g}Gi" if value >= GI else f"{value / MI:g}Mi"


def check_connector(service: dict[str, Any], region: str, connector_ready: Any) -> None:
    """A VPC connector must be READY in the function's own region (Google's Serverless VPC Access guide)."""
    one_of(service.get("vpcConnectorEgressSettings", EGRESS_SETTINGS[0]), EGRESS_SETTINGS,
           "function.service_config.vpc_connector_egress_settings")
    connector = service.get("vpcConnector")
    if not connector:
        return
    match = _CONNECTOR.match(connector)
    if not match:
        raise invalid(f"Invalid value for service_config.vpc_connector: {connector}. Expected format "
                      "projects/{project}/locations/{region}/connectors/{connector}")
    if match.group(2) != region:
        raise invalid(f"VPC connector {connector} is in {match.group(2)}: it must be in the function's region "
                      f"{region}.")
    if not connector_ready(connector):
        raise invalid(f"Invalid VPC connector {connector}: it does not exist or is not READY.")


def check_request(function: dict[str, Any], account_exists: Any) -> None:
    """The synchronous refusals of functions.create / functions.patch."""
    build, service = function.get("buildConfig") or {}, function.get("serviceConfig") or {}
    require(function, "buildConfig.runtime", "buildConfig.entryPoint", "buildConfig.source.storageSource.object")
    if build["runtime"] not in RUNTIMES:
        raise invalid(f"Invalid runtime: {build['runtime']}. Supported runtimes: {', '.join(RUNTIMES)}")
    one_of(service.get("ingressSettings", "ALLOW_ALL"), INGRESS_SETTINGS, "function.service_config.ingress_settings")
    concurrency = service.get("maxInstanceRequestConcurrency", 1)
    if not 1 <= int(concurrency) <= 1000:
        raise invalid("Invalid value for max_instance_request_concurrency: must be between 1 and 1000, "
                      f"got {concurrency}")
    timeout = service.get("timeoutSeconds", 60)
    if not 1 <= int(timeout) <= 3600:
        raise invalid(f"Invalid value for timeout_seconds: {timeout}. HTTP functions may time out after at most "
                      "3600 seconds.")
    minimum, maximum = int(service.get("minInstanceCount", 0)), int(service.get("maxInstanceCount", 100))
    if minimum < 0 or maximum < 1 or minimum > maximum:
        raise invalid(f"max_instance_count ({maximum}) must be greater than or equal to min_instance_count "
                      f"({minimum}), and min_instance_count may not be negative.")
    quantity(service.get("availableMemory", "256M"), "service_config.available_memory")
    quantity(service.get("availableCpu", "1"), "service_config.available_cpu")
    account = service.get("serviceAccountEmail")
    if account and not account_exists(account):
        raise invalid(f"Invalid service account: {account}. Service account {account} does not exist.")
    build_account = build.get("serviceAccount")
    if build_account:
        match = re.fullmatch(r"projects/([^/]+)/serviceAccounts/([^/]+)", build_account)
        if not match:
            raise invalid(f"Invalid value for build_config.service_account: {build_account}. Expected format "
                          "projects/{project}/serviceAccounts/{email}")
        if not account_exists(match.group(2)):
            raise invalid(f"Invalid build service account: {build_account}. Service account "
                          f"{match.group(2)} does not exist.")


def build_error(source: bytes | None) -> str | None:
    """Why the Python buildpack refuses the uploaded source, if it does."""
    prefix = "Build failed with status: FAILURE and message: "
    if source is None:
        return prefix + "the source archive was not uploaded: the storage object does not exist."
    try:
        with zipfile.ZipFile(io.BytesIO(source)) as archive:
            files = {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    except zipfile.BadZipFile:
        return prefix + "the source archive is not a valid zip file."
    if "main.py" not in files:
        return prefix + ("missing main.py and GOOGLE_FUNCTION_SOURCE not specified. Either create the function "
                         "in main.py or specify GOOGLE_FUNCTION_SOURCE to point to the function source file.")
    if "requirements.txt" not in files:
        return prefix + "requirements.txt not found: the function's dependencies cannot be installed."
    return None


def _defines(source: bytes, name: str) -> bool:
    try:
        module = ast.parse(source)
    except SyntaxError:
        return False
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (alias.asname or alias.name) == name for alias in node.names):
            return True
    return False


def service_error(function: dict[str, Any], source: bytes) -> str | None:
    """Why Cloud Run refuses the revision, if it does (cpu/memory/concurrency rules, entry point)."""
    config = function["serviceConfig"]
    cpu = quantity(config.get("availableCpu", "1"), "service_config.available_cpu")
    memory = quantity(config.get("availableMemory", "256M"), "service_config.available_memory")
    concurrency = int(config.get("maxInstanceRequestConcurrency", 1))
    if cpu < 1:
        if cpu < 0.08:
            return f"{_CPU_PATH}: Invalid value specified for cpu. Must be equal to one of [.08-1], 2, 4, 6, 8"
        if concurrency > 1:
            return f"{_CPU_PATH}: Invalid value specified for cpu. Total cpu < 1 is not supported with concurrency > 1."
        most = next(limit for floor, limit in _FRACTION_MEMORY if cpu >= floor - 1e-9)
        if not 128 * MI <= memory <= most:
            return (f"{_MEMORY_PATH}: Invalid value specified for container memory. For {cpu:g} CPU, memory must "
                    f"be between 128Mi and {_size(most)} inclusive.")
    else:
        if cpu not in _WHOLE_CPUS:
            return f"{_CPU_PATH}: Invalid value specified for cpu. Must be equal to one of [.08-1], 2, 4, 6, 8"
        least, most = _WHOLE_CPUS[int(cpu)]
        if not least <= memory <= most:
            return (f"{_MEMORY_PATH}: Invalid value specified for container memory. For {cpu:.1f} CPU, memory must "
                    f"be between {_size(least)} and {_size(most)} inclusive.")
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        main = archive.read("main.py")
    entry = function["buildConfig"]["entryPoint"]
    if not _defines(main, entry):
        return ("Container Healthcheck failed. The user-provided container failed to start and listen on the port "
                "defined provided by the PORT=8080 environment variable. Logs: MissingTargetException: File "
                f"/workspace/main.py is expected to contain a function named '{entry}'")
    return None
