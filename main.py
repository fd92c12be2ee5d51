"""Cloud Functions (2nd gen) entry point: ``handle_request``.

Copies the request into plain values, lets ``token_service.edge.dispatch`` answer,
and copies the answer back. Configuration is read once, here, at cold start: a
misconfigured function stops with one clear message instead of serving wrong
tokens.

The function is an ASGI one (``functions_framework.aio``), which functions-framework
serves with uvicorn workers instead of Flask on gunicorn's threads: about a
quarter of the framework's cost per request. Requests that answer from memory
(discovery, JWKS, refusals, ID tokens signed with a local key) run on the event
loop; requests that may wait on the network or on slow hashing run on a pool of
``THREADS`` threads per worker, so a slow Google never stalls the loop; past
``MAX_WAITING_REQUESTS`` of those, the next is answered 503 at once. Audit
lines leave through ``log_pipe.BatchedLines``: the requests answered in one loop
iteration share a pipe write.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from token_service import (
    MAX_BODY_BYTES,
    BatchedLines,
    ConfigurationError,
    HttpRequest,
    HttpResponse,
    WaitingRequests,
    answer_busy,
    answer_token,
    client_ip,
    may_wait,
    route,
    service_from_environment,
)


def _start():
    # sys.__stdout__: the process's own stdout, whatever functions-framework puts in sys.stdout.
    audit_lines = BatchedLines(sys.__stdout__)
    try:
        return service_from_environment(os.environ, audit_lines)
    except ConfigurationError as error:
        # One structured line Cloud Logging shows as an error, then stop the cold start.
        print(json.dumps({"severity": "CRITICAL", "message": f"token service not started: {error}"}),
              file=sys.stderr, flush=True)
        raise SystemExit(3) from None


SERVICE = _start()
# Threads start on first use, so none exists yet when gunicorn forks the workers.
WAITING_THREADS = ThreadPoolExecutor(max_workers=SERVICE.settings.threads, thread_name_prefix="waiting-request")
WAITING_REQUESTS = WaitingRequests(SERVICE.settings.max_waiting_requests)


@functions_framework.aio.http
async def handle_request(request: Request) -> Response:
    # Plain values straight from the ASGI scope: starlette's Request (its URL object above all) costs
    # more for the same values (docs/performance.md).
    scope = request.scope
    headers = _headers(scope["headers"])
    http_request = HttpRequest(
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        body=await _body(request),
        url=_logged_url(scope, headers),
        remote_ip=client_ip(headers.get("x-forwarded-for", ""), request.client.host if request.client else ""),
    )
    routed = route(SERVICE, http_request)
    if isinstance(routed, HttpResponse):
        response = routed
    elif may_wait(routed, SERVICE.signer.signs_in_process):
        if not WAITING_REQUESTS.enter():
            response = answer_busy(SERVICE, routed)
        else:
            try:
                response = await asyncio.get_running_loop().run_in_executor(WAITING_THREADS, answer_token,
                                                                            SERVICE, routed)
            finally:
                WAITING_REQUESTS.leave()
    else:
        response = answer_token(SERVICE, routed)
    return Response(response.body, response.status, headers=dict(response.headers))


def _headers(raw_headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-cased names (as the ASGI scope has them); a repeated header's values joined with commas,
    as gunicorn's WSGI does, so a second copy of an mTLS header makes its value malformed instead of
    replacing it."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def _logged_url(scope: dict, headers: dict[str, str]) -> str:
    """The URL the audit line records: scheme, host and path, never the query string: nothing
    reads it, and a client that put a secret there must not find it in the log."""
    return f"{scope['scheme']}://{headers.get('host', '')}{scope['path']}"


async def _body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:  # one byte past the limit is enough to refuse
            break
    return bytes(body)
