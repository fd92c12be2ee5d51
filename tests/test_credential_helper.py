"""The credential helper's output-file cache: written without following planted links, trusted only when it is
the user's own private regular file, and an unwritable path is an executable-format error, not a traceback."""

from __future__ import annotations

import json
import os
import time

import pytest

from workload_toolkit import credential_helper

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"


class FakeBroker:
    def __init__(self) -> None:
        self.calls = 0

    def token(self, **parameters: str) -> dict:
        self.calls += 1
        return {"version": 1, "success": True, "token_type": ID_TOKEN_TYPE, "id_token": f"fresh-{self.calls}",
                "expiration_time": int(time.time()) + 3600}


@pytest.fixture
def broker(monkeypatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(credential_helper, "_client", lambda args: fake)
    return fake


def run(monkeypatch, capsys, output_file) -> tuple[int, dict]:
    monkeypatch.setenv("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", str(output_file))
    status = credential_helper.main(["--broker", "https://broker.invalid", "--cert", "c.pem", "--key", "k.pem"])
    out = capsys.readouterr().out
    return status, json.loads(out)


def cached_response(token: str = "cached") -> str:
    return json.dumps({"version": 1, "success": True, "token_type": ID_TOKEN_TYPE, "id_token": token,
                       "expiration_time": int(time.time()) + 3600})


def test_a_symlink_planted_at_the_output_path_is_not_followed(tmp_path, monkeypatch, capsys, broker):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    output = tmp_path / "cache.json"
    output.symlink_to(victim)
    # the temporary file's name must not be predictable either: a link planted there is not followed
    (tmp_path / f"cache.json.{os.getpid()}.tmp").symlink_to(victim)
    status, answer = run(monkeypatch, capsys, output)
    assert status == 0 and answer["id_token"] == "fresh-1"
    assert victim.read_text() == "precious"
    assert not output.is_symlink() and json.loads(output.read_text()) == answer
    assert oct(output.stat().st_mode & 0o777) == "0o600"


def test_a_symlinked_cache_is_not_trusted(tmp_path, monkeypatch, capsys, broker):
    planted = tmp_path / "planted.json"
    planted.write_text(cached_response("planted"))
    planted.chmod(0o600)
    output = tmp_path / "cache.json"
    output.symlink_to(planted)
    status, answer = run(monkeypatch, capsys, output)
    assert status == 0 and answer["id_token"] == "fresh-1"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o700])
def test_a_cache_looser_than_0600_is_ignored(tmp_path, monkeypatch, capsys, broker, mode):
    output = tmp_path / "cache.json"
    output.write_text(cached_response())
    output.chmod(mode)
    status, answer = run(monkeypatch, capsys, output)
    assert status == 0 and answer["id_token"] == "fresh-1" and broker.calls == 1


def test_a_private_cache_of_ones_own_is_served(tmp_path, monkeypatch, capsys, broker):
    output = tmp_path / "cache.json"
    output.write_text(cached_response())
    output.chmod(0o400)
    status, answer = run(monkeypatch, capsys, output)
    assert status == 0 and answer["id_token"] == "cached" and broker.calls == 0


def test_a_cache_owned_by_someone_else_is_ignored(tmp_path, monkeypatch, capsys, broker):
    output = tmp_path / "cache.json"
    output.write_text(cached_response())
    output.chmod(0o600)
    monkeypatch.setattr(os, "getuid", lambda: output.stat().st_uid + 1)  # as if another user wrote it
    status, answer = run(monkeypatch, capsys, output)
    assert status == 0 and answer["id_token"] == "fresh-1"


@pytest.mark.parametrize("where", ["missing-directory", "under-a-file"])
def test_an_unwritable_cache_path_is_an_executable_format_error(tmp_path, monkeypatch, capsys, broker, where):
    (tmp_path / "file").write_text("")
    parent = tmp_path / ("missing" if where == "missing-directory" else "file")
    status, answer = run(monkeypatch, capsys, parent / "cache.json")
    assert status == 1
    assert answer["version"] == 1 and answer["success"] is False
    assert answer["code"] and str(parent / "cache.json") in answer["message"]
