"""References between Compute resources: the URL forms Google accepts, and the self links it stores.

Compute accepts a full URL (any host, ``.../compute/v1/projects/P/...``), a
partial one (``projects/P/global/urlMaps/U``) or a scope-relative one
(``global/urlMaps/U``), and stores the full self link. Self links here use the
fake's host, because gcloud parses them with its endpoint override as the base.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devtools.control_plane.server import FAKE_HOST, invalid

if TYPE_CHECKING:
    from devtools.control_plane.compute import ComputeApi

_COMPUTE_URL = re.compile(r"^(?:https?://[^/]+/compute/(?:v1|beta|alpha)/)?(?:projects/([^/]+)/)?"
                          r"(?:global|regions/([^/]+))/([A-Za-z]+)/([^/]+)$")
_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")
_SINGULAR = {"addresses": "address", "sslCertificates": "sslCertificate", "sslPolicies": "sslPolicy",
             "networkEndpointGroups": "networkEndpointGroup", "backendServices": "backendService",
             "urlMaps": "urlMap", "targetHttpsProxies": "targetHttpsProxy", "forwardingRules": "forwardingRule"}
_SERVER_TLS_POLICY = re.compile(r"^(?://networksecurity\.googleapis\.com/|https?://[^/]+/(?:networksecurity/)?"
                                r"(?:v1|v1beta1|v1alpha1)/)?(projects/([^/]+)/locations/([^/]+)/"
                                r"serverTlsPolicies/([^/]+))$")


@dataclass(frozen=True)
class Ref:
    project: str
    collection: str
    name: str
    region: str | None = None

    @property
    def relative(self) -> str:
        scope = f"regions/{self.region}" if self.region else "global"
        return f"projects/{self.project}/{scope}/{self.collection}/{self.name}"


def link(ref: Ref) -> str:
    return f"http://{FAKE_HOST}/compute/v1/{ref.relative}"


def relative(self_link: str) -> str:
    return self_link.split("/compute/v1/", 1)[-1]


def short_kind(collection: str) -> str:
    """``sslCertificates`` -> ``ssl_certificate``, as Compute names a kind in its messages."""
    return _SNAKE.sub("_", _SINGULAR[collection]).lower()


def parse(value: object, field: str, project: str, *collections: str) -> Ref:
    """The resource a reference field names, or Google's 400 for a malformed or wrong-kind URL."""
    match = _COMPUTE_URL.match(value) if isinstance(value, str) else None
    if not match or match.group(3) not in collections:
        raise invalid(f"Invalid value for field '{field}': '{value}'. The URL is malformed.")
    referenced_project, region, collection, name = match.groups()
    if referenced_project not in (None, project):
        raise invalid(f"Invalid value for field '{field}': '{value}'. Cross-project references for this resource "
                      "are not allowed.", "crossProjectReferenceNotAllowed")
    return Ref(project, collection, name, region)


def server_tls_policy(value: object, project_ids: tuple[str, ...], project: str) -> str:
    """The relative name of a server TLS policy a proxy names; Google accepts the same forms as elsewhere."""
    match = _SERVER_TLS_POLICY.match(value) if isinstance(value, str) else None
    if not match:
        raise invalid(f"Invalid value for field 'resource.serverTlsPolicy': '{value}'. The URL is malformed.")
    _, referenced_project, location, name = match.groups()
    if referenced_project not in project_ids:
        raise invalid(f"Invalid value for field 'resource.serverTlsPolicy': '{value}'. Cross-project references "
                      "for this resource are not allowed.", "crossProjectReferenceNotAllowed")
    return f"projects/{project}/locations/{location}/serverTlsPolicies/{name}"


def resolve(api: ComputeApi, value: Any, field: str, project: str, *collections: str) -> tuple[str, dict[str, Any]]:
    """A reference's self link and the resource it names (404 if that does not exist)."""
    ref = parse(value, field, project, *collections)
    return link(ref), api.find(ref)


def url_map_services(resource: dict[str, Any]) -> list[str]:
    services = [resource.get("defaultService", "")]
    for matcher in resource.get("pathMatchers") or []:
        services.append(matcher.get("defaultService", ""))
        services += [rule.get("service", "") for rule in matcher.get("pathRules") or []]
    return [service for service in services if service]
