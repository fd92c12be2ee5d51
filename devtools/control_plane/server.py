"""The fake's HTTP surface: routing, Google's error envelope, operations, the journal.

The real ``gcloud`` reaches this server as its HTTP proxy (``CLOUDSDK_PROXY_*``)
with every API's endpoint overridden to ``http://google.fake/<api>/...``, so
regional hosts such as ``us-central1-google.fake`` (Cloud Run) need no DNS.
Each API module registers routes on an ``Api``; a route that changes state is
journalled, so tests can ask what a run created, updated or deleted.
"""

from __future__ import annotations

import http.server
import json
import re
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

FAKE_HOST = "google.fake"
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED"}


class GoogleError(Exception):
    """An error in Google's JSON envelope (``{"error": {"code", "message", "status", ...}}``)."""

    def __init__(self, code: int, message: str, status: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS_NAMES.get(code, "UNKNOWN")
        self.reason = reason

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.reason:  # Compute's envelope also lists errors[] with a reason
            error["errors"] = [{"domain": "global", "reason": self.reason, "message": self.message}]
        return {"error": error}


def invalid(message: str, reason: str = "invalid") -> GoogleError:
    return GoogleError(400, message, "INVALID_ARGUMENT", reason)


def not_found(what: str) -> GoogleError:
    return GoogleError(404, f"The resource '{what}' was not found", "NOT_FOUND", "notFound")


def already_exists(what: str) -> GoogleError:
    return GoogleError(409, f"The resource '{what}' already exists", "ALREADY_EXISTS", "alreadyExists")


def failed_precondition(message: str, reason: str = "failedPrecondition") -> GoogleError:
    return GoogleError(400, message, "FAILED_PRECONDITION", reason)


def require(body: dict[str, Any], *fields: str) -> None:
    """Google's refusal of a missing required field."""
    for name in fields:
        value: Any = body
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value in (None, "", [], {}):
            raise invalid(f"Invalid value for field '{name}': required field not set")


def one_of(value: Any, allowed: tuple[str, ...], name: str) -> None:
    """Google's refusal of an unknown enum value."""
    if value not in allowed:
        raise invalid(f"Invalid value at '{name}' ({value!r}): expected one of {', '.join(allowed)}")


@dataclass
class Request:
    method: str
    host: str
    path: str  # without the API's prefix
    query: dict[str, list[str]]
    raw: bytes

    def json(self) -> dict[str, Any]:
        if not self.raw:
            return {}
        try:
            body = json.loads(self.raw)
        except ValueError as error:
            raise invalid(f"Invalid JSON payload received. {error}") from error
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected an object")
        return body

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[0]


@dataclass
class Event:
    api: str
    method: str
    path: str
    action: str  # "create", "update", "delete" or another verb the route names


Handler = Callable[..., Any]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    action: str | None  # None: reads only


REGIONS = ("us-central1", "us-east1", "us-east4", "us-west1", "europe-west1", "europe-west2", "europe-west3",
           "asia-east1", "asia-northeast1", "australia-southeast1")


class Api:
    """One Google API: its path prefix, the service that must be enabled, its routes."""

    prefix = ""
    service = ""

    def __init__(self, plane: ControlPlane):
        self.plane = plane
        self.routes: list[Route] = []

    def route(self, method: str, pattern: str, handler: Handler, action: str | None = None) -> None:
        self.routes.append(Route(method, re.compile(f"^{pattern}$"), handler, action))

    def _location(self, segment: str, region: str, any_region: bool = False) -> str:
        """``projects/P/locations/R`` of a regional resource; Google's 404 for a region it does not serve
        (``-``, every region, only where ``any_region``)."""
        project = self.plane.project(segment)
        if region not in REGIONS and not (any_region and region == "-"):
            raise GoogleError(404, f"Location '{region}' is not found or access is unauthorized.", "NOT_FOUND")
        return f"projects/{project}/locations/{region}"

    def operation(self, name: str, response: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """A finished long-running operation, remembered so that gcloud can poll it."""
        operation = {"name": name, "done": True, "response": response or {}, **extra}
        self.plane.operations[name] = operation
        return operation


@dataclass
class ControlPlane:
    """Google's control plane for one project, as far as deploy.sh uses it."""

    project_id: str = "my-project"
    project_number: str = "123456789012"
    token: str = "fake-access-token"
    enabled_services: set[str] = field(default_factory=set)
    journal: list[Event] = field(default_factory=list)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (method, path regex) -> GoogleError: what a test makes Google refuse
    refusals: list[tuple[str, re.Pattern[str], GoogleError]] = field(default_factory=list)
    # called after every change, with the plane; a test's invariants, which report here
    watchers: list[Callable[[ControlPlane], None]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    apis: dict[str, Api] = field(default_factory=dict)
    # the domain-restricted-sharing organization policy: allUsers may not be bound
    public_access_forbidden: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)
    _counter: int = 0

    def install(self, *api_types: type[Api]) -> None:
        for api_type in api_types:
            api = api_type(self)
            self.apis[api.prefix] = api

    def api(self, prefix: str) -> Any:
        return self.apis[prefix]

    def next_id(self) -> str:
        self._counter += 1
        return f"{self._counter:06d}"

    def project(self, name: str) -> str:
        """The project id for a path's project segment (id or number), or 404."""
        if name in (self.project_id, self.project_number):
            return self.project_id
        raise GoogleError(403, f"Permission denied on resource project {name} (or it may not exist).",
                          "PERMISSION_DENIED", "forbidden")

    def refuse(self, method: str, path_pattern: str, error: GoogleError) -> None:
        self.refusals.append((method, re.compile(path_pattern), error))

    def mutations(self, since: int = 0) -> list[Event]:
        return self.journal[since:]

    def handle(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any] | bytes]:
        parts = urlsplit(url)
        host = parts.hostname or headers.get("host", "")
        segments = parts.path.lstrip("/").split("/", 1)
        api = self.apis.get(segments[0])
        if api is None:
            return 404, not_found(parts.path).body()
        request = Request(method, host, "/" + (segments[1] if len(segments) > 1 else ""),
                          parse_qs(parts.query), raw)
        with self.lock:
            try:
                if api.prefix != "upload" and headers.get("authorization") != f"Bearer {self.token}":
                    raise GoogleError(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
                for refused_method, pattern, error in self.refusals:
                    if refused_method in (method, "*") and pattern.search(request.path):
                        raise error
                if api.service and api.service not in self.enabled_services:
                    raise GoogleError(
                        403, f"{api.service} API has not been used in project {self.project_number} before or it "
                        "is disabled. Enable it and retry.", "PERMISSION_DENIED", "accessNotConfigured")
                return self._route(api, request)
            except GoogleError as error:
                return error.code, error.body()

    def _route(self, api: Api, request: Request) -> tuple[int, dict[str, Any] | bytes]:
        known_path = False
        for route in api.routes:
            match = route.pattern.match(request.path)
            if not match:
                continue
            known_path = True
            if route.method != request.method:
                continue
            result = route.handler(request, *match.groups())
            if route.action:
                self.journal.append(Event(api.prefix, request.method, request.path, route.action))
                for watcher in self.watchers:
                    watcher(self)
            return 200, result
        operation = self.operations.get(request.path.split("/", 2)[-1])
        if request.method == "GET" and operation is not None:
            return 200, operation
        if known_path:
            return 405, GoogleError(405, f"Method {request.method} not allowed", "METHOD_NOT_ALLOWED").body()
        raise not_found(request.path)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ControlPlaneServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = self.path if self.path.startswith("http") else f"http://{FAKE_HOST}{self.path}"
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, body = self.server.plane.handle(self.command, url, headers, raw)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ControlPlaneServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, plane: ControlPlane, port: int = 0):
        self.plane = plane
        super().__init__(("127.0.0.1", port), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def __enter__(self) -> ControlPlaneServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
