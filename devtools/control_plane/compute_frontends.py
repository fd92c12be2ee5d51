"""What Compute accepts for the TLS front end of a load balancer: certificates, policies, proxies, rules.

Part of ``compute_rules``: each function validates a whole resource and returns
the fields Google normalises (references as self links) or defaults.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any

from devtools.control_plane.compute_refs import parse, relative, resolve, server_tls_policy, url_map_services
from devtools.control_plane.server import invalid, not_found, one_of, require

if TYPE_CHECKING:
    from devtools.control_plane.compute import ComputeApi

Fields = dict[str, Any]
_GLOBAL_SCHEMES = ("EXTERNAL", "EXTERNAL_MANAGED", "INTERNAL_MANAGED", "INTERNAL_SELF_MANAGED")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?",
                     re.IGNORECASE)
_FEATURES = {  # the cipher suites each pre-defined SSL policy profile enables (abridged, as Google lists them)
    "COMPATIBLE": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                   "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                   "TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384",
                   "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA"],
    "MODERN": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
               "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
               "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"],
    "RESTRICTED": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                   "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
}


def ssl_certificate(api: ComputeApi, project: str, resource: Fields) -> Fields:
    kind = resource.get("type", "MANAGED" if "managed" in resource else "SELF_MANAGED")
    one_of(kind, ("MANAGED", "SELF_MANAGED"), "resource.type")
    if kind == "SELF_MANAGED":
        require(resource, "certificate", "privateKey")
        if "-----BEGIN CERTIFICATE-----" not in resource["certificate"]:
            raise invalid("The SSL certificate could not be parsed.", "sslCertificateCouldNotParseCert")
        resource.pop("privateKey")  # never returned
        return {"type": kind}
    require(resource, "managed.domains")
    if resource.get("certificate") or resource.get("privateKey"):
        raise invalid("Invalid value for field 'resource.certificate': a Google-managed certificate cannot have a "
                      "certificate or private key.")
    domains = resource["managed"]["domains"]
    if len(domains) > 100:
        raise invalid("Invalid value for field 'resource.managed.domains': at most 100 domains are allowed.")
    for index, domain in enumerate(domains):
        if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain):
            raise invalid(f"Invalid value for field 'resource.managed.domains[{index}]': '{domain}'. Domain names "
                          "must be fully qualified and must not contain wildcards.")
    return {"type": kind, "managed": {"domains": domains, "status": "PROVISIONING",
                                      "domainStatus": {domain: "PROVISIONING" for domain in domains}}}


def ssl_policy(api: ComputeApi, project: str, resource: Fields) -> Fields:
    profile = resource.get("profile", "COMPATIBLE")
    one_of(profile, ("COMPATIBLE", "MODERN", "RESTRICTED", "CUSTOM"), "resource.profile")
    version = resource.get("minTlsVersion", "TLS_1_0")
    one_of(version, ("TLS_1_0", "TLS_1_1", "TLS_1_2", "TLS_1_3"), "resource.minTlsVersion")
    custom = resource.get("customFeatures") or []
    if profile == "CUSTOM" and not custom:
        raise invalid("Invalid value for field 'resource.customFeatures': ''. At least one feature must be "
                      "specified for the CUSTOM profile.")
    if profile != "CUSTOM" and custom:
        raise invalid(f"Invalid value for field 'resource.customFeatures': '{custom}'. Custom features can only be "
                      "specified with the CUSTOM profile.")
    return {"profile": profile, "minTlsVersion": version, "enabledFeatures": custom or _FEATURES[profile]}


def target_https_proxy(api: ComputeApi, project: str, resource: Fields) -> Fields:
    require(resource, "urlMap")
    url_map, _ = resolve(api, resource["urlMap"], "resource.urlMap", project, "urlMaps")
    certificates = []
    for index, certificate in enumerate(resource.get("sslCertificates") or []):
        certificates.append(resolve(api, certificate, f"resource.sslCertificates[{index}]", project,
                                     "sslCertificates")[0])
    if not certificates and not resource.get("certificateMap"):
        raise invalid("Invalid value for field 'resource.sslCertificates': ''. At least one SSL certificate or a "
                      "certificate map must be specified for a target HTTPS proxy.")
    if len(certificates) > 15:
        raise invalid("Invalid value for field 'resource.sslCertificates': at most 15 SSL certificates are allowed.")
    fields: Fields = {"urlMap": url_map, "quicOverride": resource.get("quicOverride", "NONE")}
    one_of(fields["quicOverride"], ("NONE", "ENABLE", "DISABLE"), "resource.quicOverride")
    if certificates:
        fields["sslCertificates"] = certificates
    if resource.get("sslPolicy"):
        fields["sslPolicy"] = resolve(api, resource["sslPolicy"], "resource.sslPolicy", project, "sslPolicies")[0]
    if resource.get("serverTlsPolicy"):
        policy = server_tls_policy(resource["serverTlsPolicy"], (project, api.plane.project_number), project)
        if not api.server_tls_policy_exists(policy):
            raise not_found(policy)
        if "/locations/global/" not in policy:
            raise invalid(f"Invalid value for field 'resource.serverTlsPolicy': '{resource['serverTlsPolicy']}'. "
                          "A global target HTTPS proxy needs a global server TLS policy.")
        fields["serverTlsPolicy"] = f"//networksecurity.googleapis.com/{policy}"
    return fields


def forwarding_rule(api: ComputeApi, project: str, resource: Fields) -> Fields:
    scheme = resource.get("loadBalancingScheme", "EXTERNAL")
    one_of(scheme, _GLOBAL_SCHEMES, "resource.loadBalancingScheme")
    require(resource, "target")
    target, proxy = resolve(api, resource["target"], "resource.target", project, "targetHttpsProxies",
                             "targetHttpProxies", "targetSslProxies", "targetTcpProxies", "targetGrpcProxies")
    url_map = api.find(parse(proxy["urlMap"], "resource.target", project, "urlMaps"))
    for service_link in url_map_services(url_map):
        service = api.find(parse(service_link, "resource.target", project, "backendServices", "backendBuckets"))
        if service.get("loadBalancingScheme", "EXTERNAL") != scheme:
            raise invalid(f"Invalid value for field 'resource.loadBalancingScheme': '{scheme}'. The load balancing "
                          f"scheme of the forwarding rule must match that of backend service "
                          f"'{relative(service_link)}' ({service.get('loadBalancingScheme')}).")
    protocol = resource.get("IPProtocol", "TCP")
    one_of(protocol, ("TCP", "UDP", "ESP", "AH", "SCTP", "ICMP", "L3_DEFAULT"), "resource.IPProtocol")
    if protocol != "TCP":
        raise invalid(f"Invalid value for field 'resource.IPProtocol': '{protocol}'. A target proxy needs TCP.")
    if resource.get("ports"):
        raise invalid("Invalid value for field 'resource.ports': ports can only be set on internal passthrough "
                      "forwarding rules; use portRange.")
    ports = str(resource.get("portRange", "")).split("-")
    if not all(port.isdigit() and 1 <= int(port) <= 65535 for port in ports) or len(set(ports)) != 1:
        raise invalid(f"Invalid value for field 'resource.portRange': '{resource.get('portRange', '')}'. A target "
                      "proxy's forwarding rule needs exactly one port.")
    tier = resource.get("networkTier", "PREMIUM")
    if tier != "PREMIUM":
        raise invalid(f"Invalid value for field 'resource.networkTier': '{tier}'. Global forwarding rules need the "
                      "PREMIUM network tier.")
    address = _forwarding_address(api, project, resource)
    for other in api.forwarding_rules.values():
        if other["name"] != resource["name"] and other.get("IPAddress") == address and \
                other["portRange"] == f"{ports[0]}-{ports[0]}":
            raise invalid(f"Invalid value for field 'resource.IPAddress': '{address}'. The IP address and port are "
                          f"already used by forwarding rule '{relative(other['selfLink'])}'.")
    return {"target": target, "loadBalancingScheme": scheme, "IPProtocol": protocol, "networkTier": tier,
            "portRange": f"{ports[0]}-{ports[0]}", "IPAddress": address,
            "ipVersion": "IPV6" if ":" in address else "IPV4", "labelFingerprint": "42WmSpB8rSM="}


def _forwarding_address(api: ComputeApi, project: str, resource: Fields) -> str:
    """The IP a forwarding rule serves: a reserved address (by URL or by IP) or a new ephemeral one."""
    value = resource.get("IPAddress")
    if not value:
        serial = int(api.plane.next_id())
        return f"34.160.{serial // 250}.{serial % 250 + 2}"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return resolve(api, value, "resource.IPAddress", project, "addresses")[1]["address"]
    if value not in {address["address"] for address in api.addresses.values()}:
        raise invalid(f"Invalid value for field 'resource.IPAddress': '{value}'. Specified IP address is not "
                      "reserved in this project.")
    return str(value)
