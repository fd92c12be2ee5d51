"""What Compute accepts for each load-balancer resource, and the fields it fills in.

``check`` validates a whole resource (on insert, and again after a PATCH or PUT
has been applied) and returns the fields Google normalises or defaults:
references become self links, enums get their defaults. A reference to a
resource that does not exist is Google's 404 for that resource.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devtools.control_plane import compute_frontends as frontends
from devtools.control_plane import compute_headers
from devtools.control_plane.compute_refs import resolve, url_map_services
from devtools.control_plane.server import invalid, not_found, one_of, require

if TYPE_CHECKING:
    from devtools.control_plane.compute import ComputeApi

Fields = dict[str, Any]
_GLOBAL_SCHEMES = ("EXTERNAL", "EXTERNAL_MANAGED", "INTERNAL_MANAGED", "INTERNAL_SELF_MANAGED")
_REGION = re.compile(r"[a-z]+(-[a-z]+)+[0-9]+")


def fingerprint(resource: Fields) -> str:
    content = {key: value for key, value in resource.items() if key != "fingerprint"}
    return base64.b64encode(hashlib.sha256(json.dumps(content, sort_keys=True).encode()).digest()[:8]).decode()


def same_fingerprint(sent: Any, resource: Fields) -> bool:
    """gcloud echoes a fingerprint in URL-safe base64 (apitools' bytes encoding); Google accepts either alphabet."""
    return isinstance(sent, str) and sent.replace("-", "+").replace("_", "/") == resource.get("fingerprint")


def require_region(region: str) -> None:
    if not _REGION.fullmatch(region):
        raise not_found(f"regions/{region}")


def check(api: ComputeApi, collection: str, project: str, resource: Fields) -> Fields:
    checker: Callable[[ComputeApi, str, Fields], Fields] = _CHECKS[collection]
    fields = checker(api, project, resource)
    if collection not in ("addresses", "sslCertificates", "networkEndpointGroups"):
        fields["fingerprint"] = fingerprint({**resource, **fields})
    return fields


def references(collection: str, resource: Fields) -> set[str]:
    """The self links a resource names (what keeps those resources from being deleted)."""
    if collection == "forwardingRules":
        return {resource.get("target", "")}
    if collection == "targetHttpsProxies":
        return {resource.get("urlMap", ""), resource.get("sslPolicy", ""), *resource.get("sslCertificates", [])}
    if collection == "urlMaps":
        return set(url_map_services(resource))
    if collection == "backendServices":
        return {backend.get("group", "") for backend in resource.get("backends", [])}
    return set()


def _address(api: ComputeApi, project: str, resource: Fields) -> Fields:
    address_type = resource.get("addressType", "EXTERNAL")
    one_of(address_type, ("EXTERNAL", "INTERNAL"), "resource.addressType")
    if address_type == "INTERNAL":
        require(resource, "network")  # no networks are modelled, so an internal address cannot resolve
    version = resource.get("ipVersion", "IPV4")
    one_of(version, ("IPV4", "IPV6"), "resource.ipVersion")
    tier = resource.get("networkTier", "PREMIUM")
    one_of(tier, ("PREMIUM", "STANDARD"), "resource.networkTier")
    if tier != "PREMIUM":
        raise invalid(f"Invalid value for field 'resource.networkTier': '{tier}'. Network tier STANDARD is not "
                      "supported for global addresses.")
    taken = {other["address"] for other in api.addresses.values() if other["name"] != resource["name"]}
    address = resource.get("address")
    if address is None:
        serial = int(api.plane.next_id())
        address = f"34.117.{serial // 250}.{serial % 250 + 2}" if version == "IPV4" else f"2600:1901:0:{serial:x}::"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise invalid(f"Invalid value for field 'resource.address': '{address}'. Not a valid IP address.") from None
    if (parsed.version == 4) != (version == "IPV4") or address in taken:
        raise invalid(f"Invalid value for field 'resource.address': '{address}'. The address is not available or "
                      "does not match the IP version.")
    return {"addressType": address_type, "ipVersion": version, "networkTier": tier, "address": address}


def _network_endpoint_group(api: ComputeApi, project: str, resource: Fields) -> Fields:
    kind = resource.get("networkEndpointType", "GCE_VM_IP_PORT")
    one_of(kind, ("GCE_VM_IP", "GCE_VM_IP_PORT", "GCE_VM_IP_PORTMAP", "NON_GCP_PRIVATE_IP_PORT", "INTERNET_IP_PORT",
                  "INTERNET_FQDN_PORT", "SERVERLESS", "PRIVATE_SERVICE_CONNECT"), "resource.networkEndpointType")
    if kind != "SERVERLESS":  # only serverless groups are modelled: the others need networks
        raise invalid(f"Invalid value for field 'resource.networkEndpointType': '{kind}'. This fake models "
                      "SERVERLESS network endpoint groups only.")
    targets = [key for key in ("cloudRun", "cloudFunction", "appEngine") if key in resource]
    if len(targets) != 1:
        raise invalid("Invalid value for field 'resource': exactly one of cloudRun, cloudFunction or appEngine "
                      "must be set for a SERVERLESS network endpoint group.")
    target = resource[targets[0]]
    needed = {"cloudRun": "service", "cloudFunction": "function"}.get(targets[0])
    if not isinstance(target, dict) or (needed and not target.get(needed) and not target.get("urlMask")):
        raise invalid(f"Invalid value for field 'resource.{targets[0]}': '{target}'. Either {needed} or urlMask "
                      "must be set.")
    for field in ("network", "subnetwork", "defaultPort"):
        if field in resource:
            raise invalid(f"Invalid value for field 'resource.{field}': '{resource[field]}'. It must not be set "
                          "for a SERVERLESS network endpoint group.")
    return {"networkEndpointType": kind}


def _backend_service(api: ComputeApi, project: str, resource: Fields) -> Fields:
    scheme = resource.get("loadBalancingScheme", "EXTERNAL")
    one_of(scheme, (*_GLOBAL_SCHEMES, "INTERNAL"), "resource.loadBalancingScheme")
    if scheme == "INTERNAL":
        raise invalid("Invalid value for field 'resource.loadBalancingScheme': 'INTERNAL'. INTERNAL backend "
                      "services must be regional.")
    one_of(resource.get("protocol", "HTTP"), ("HTTP", "HTTPS", "HTTP2", "H2C", "GRPC", "TCP", "SSL", "UDP",
                                               "UNSPECIFIED"), "resource.protocol")
    backends, groups, serverless = [], set(), 0
    for index, backend in enumerate(resource.get("backends") or []):
        field = f"resource.backends[{index}].group"
        require({"group": backend.get("group")}, "group")
        if "balancingMode" in backend:
            one_of(backend["balancingMode"], ("UTILIZATION", "RATE", "CONNECTION", "CUSTOM_METRICS"),
                   f"resource.backends[{index}].balancingMode")
        group, neg = resolve(api, backend["group"], field, project, "networkEndpointGroups", "instanceGroups")
        if group in groups:
            raise invalid(f"Invalid value for field '{field}': '{backend['group']}'. Duplicate backend group.")
        groups.add(group)
        serverless += neg.get("networkEndpointType") == "SERVERLESS"
        backends.append({**backend, "group": group})
    if serverless and resource.get("healthChecks"):
        raise invalid(f"Invalid value for field 'resource.healthChecks': '{resource['healthChecks'][0]}'. A backend "
                      "service cannot have a healthcheck with Serverless network endpoint group backends.")
    if serverless and serverless != len(backends):
        raise invalid("Invalid value for field 'resource.backends': serverless network endpoint groups cannot be "
                      "mixed with other kinds of backends.")
    for check_ref in resource.get("healthChecks") or []:
        resolve(api, check_ref, "resource.healthChecks", project, "healthChecks", "httpHealthChecks",
                 "httpsHealthChecks")  # none are modelled: any health check is Google's 404
    log = resource.get("logConfig") or {}
    rate = log.get("sampleRate")
    if rate is not None and (not isinstance(rate, int | float) or not 0 <= rate <= 1):
        raise invalid(f"Invalid value for field 'resource.logConfig.sampleRate': '{rate}'. Must be in [0, 1].")
    if "optionalMode" in log:
        one_of(log["optionalMode"], ("INCLUDE_ALL_OPTIONAL", "EXCLUDE_ALL_OPTIONAL", "CUSTOM"),
               "resource.logConfig.optionalMode")
    compute_headers.check(resource.get("customRequestHeaders"), "resource.customRequestHeaders")
    compute_headers.check(resource.get("customResponseHeaders"), "resource.customResponseHeaders")
    defaults = {"protocol": "HTTP", "port": 80, "portName": "http", "timeoutSec": 30, "sessionAffinity": "NONE",
                "affinityCookieTtlSec": 0, "connectionDraining": {"drainingTimeoutSec": 0}, "enableCDN": False}
    return {**{key: value for key, value in defaults.items() if key not in resource},
            "loadBalancingScheme": scheme, **({"backends": backends} if backends else {})}


def _url_map(api: ComputeApi, project: str, resource: Fields) -> Fields:
    defaults = [key for key in ("defaultService", "defaultUrlRedirect", "defaultRouteAction") if key in resource]
    if not defaults:
        raise invalid("Invalid value for field 'resource.defaultService': ''. A URL map must have a default "
                      "service or a default redirect.")
    fields: Fields = {}
    schemes: dict[str, str] = {}
    if "defaultService" in resource:
        fields["defaultService"], service = resolve(api, resource["defaultService"], "resource.defaultService",
                                                     project, "backendServices", "backendBuckets")
        schemes[fields["defaultService"]] = service.get("loadBalancingScheme", "EXTERNAL")
    matchers = []
    for index, matcher in enumerate(resource.get("pathMatchers") or []):
        matcher = dict(matcher)
        if "defaultService" in matcher:
            matcher["defaultService"], service = resolve(
                api, matcher["defaultService"], f"resource.pathMatchers[{index}].defaultService", project,
                "backendServices", "backendBuckets")
            schemes[matcher["defaultService"]] = service.get("loadBalancingScheme", "EXTERNAL")
        rules = []
        for number, rule in enumerate(matcher.get("pathRules") or []):
            target, service = resolve(api, rule.get("service"), f"resource.pathMatchers[{index}].pathRules"
                                       f"[{number}].service", project, "backendServices", "backendBuckets")
            schemes[target] = service.get("loadBalancingScheme", "EXTERNAL")
            rules.append({**rule, "service": target})
        if rules:
            matcher["pathRules"] = rules
        matchers.append(matcher)
    names = {matcher.get("name") for matcher in matchers}
    for index, host_rule in enumerate(resource.get("hostRules") or []):
        if host_rule.get("pathMatcher") not in names:
            raise invalid(f"Invalid value for field 'resource.hostRules[{index}].pathMatcher': "
                          f"'{host_rule.get('pathMatcher')}'. No path matcher with that name exists.")
    if len(set(schemes.values())) > 1:
        raise invalid("Invalid value for field 'resource.defaultService': backend services with different load "
                      "balancing schemes cannot be referenced by the same URL map.")
    return {**fields, **({"pathMatchers": matchers} if matchers else {})}


_CHECKS: dict[str, Callable[[ComputeApi, str, Fields], Fields]] = {
    "addresses": _address, "sslCertificates": frontends.ssl_certificate, "sslPolicies": frontends.ssl_policy,
    "networkEndpointGroups": _network_endpoint_group, "backendServices": _backend_service, "urlMaps": _url_map,
    "targetHttpsProxies": frontends.target_https_proxy, "forwardingRules": frontends.forwarding_rule,
}
