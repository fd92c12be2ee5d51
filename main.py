"""Cloud Functions (2nd gen) entry point: ``handle_request``.

Copies the Flask request into plain values, lets ``token_service.dispatch``
answer, and copies the answer back. Configuration is read once, here, at cold
start: a misconfigured function stops with one clear message instead of
serving wrong tokens.
"""

from __future__ import annotations

import json
import os
import sys

import functions_framework

from token_service.config import ConfigurationError
from token_service.dispatch import HttpRequest, dispatch
from token_service.service import service_from_environment
from token_service.token_request import MAX_BODY_BYTES


def _start():
    try:
        return service_from_environment(os.environ)
    except ConfigurationError as error:
        # One structured line Cloud Logging shows as an error, then stop the cold start.
        print(json.dumps({"severity": "CRITICAL", "message": f"token service not started: {error}"}),
              file=sys.stderr, flush=True)
        raise SystemExit(3) from None


SERVICE = _start()


@functions_framework.http
def handle_request(request):
    forwarded_for = request.headers.get("X-Forwarded-For", "")
    response = dispatch(
        SERVICE,
        HttpRequest(
            method=request.method,
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            # One byte past the limit is enough to refuse an oversized body.
            body=request.stream.read(MAX_BODY_BYTES + 1),
            url=request.url,
            remote_ip=forwarded_for.split(",")[0].strip() or request.remote_addr or "",
        ),
    )
    return response.body, response.status, list(response.headers)
