"""The runtime service account, asked of the metadata server (the emulator's) at cold start."""

import pytest

from devtools.google_emulator import GoogleEmulator, serve
from token_service.google.metadata import runtime_service_account

RUNTIME = "runtime@project.iam.gserviceaccount.com"


@pytest.fixture
def metadata():
    emulator = GoogleEmulator(providers=[], bindings={}, runtime_service_account=RUNTIME)
    server = serve(emulator)
    yield emulator, {"GCE_METADATA_HOST": f"127.0.0.1:{server.server_address[1]}"}
    server.shutdown()


def test_names_the_runtime_service_account(metadata):
    _, environ = metadata
    assert runtime_service_account(environ) == RUNTIME


@pytest.mark.parametrize("fault, message", [(404, "answered 404"), ("reset", None), ("garbage", "returned")])
def test_an_answer_without_an_email_is_an_os_error(metadata, fault, message):
    emulator, environ = metadata
    emulator.inject("metadata", fault)
    with pytest.raises(OSError, match=message):
        runtime_service_account(environ)


def test_a_hung_metadata_server_times_out(metadata):
    emulator, environ = metadata
    emulator.inject("metadata", "hang:2")
    with pytest.raises(OSError):
        runtime_service_account(environ, timeout=0.3)


def test_nothing_listening_is_an_os_error():
    with pytest.raises(OSError):
        runtime_service_account({"GCE_METADATA_HOST": "127.0.0.1:9"})
