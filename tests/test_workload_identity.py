"""Loading a workload's certificate: files, PKCS#12, and the rotated managed workload identity directory."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from devtools.pki import mint_client
from workload_toolkit import identity
from workload_toolkit.identity import IdentityError

SPIFFE = "spiffe://td.example/ns/a/sa/b"


def test_from_files_and_a_mismatched_key(tmp_path):
    one = mint_client(tmp_path, "one", spiffe=SPIFFE)
    two = mint_client(tmp_path, "two", spiffe=SPIFFE)
    loaded = identity.from_files(str(one.certificate), str(one.key))
    assert loaded.certificate.serial_number
    with pytest.raises(IdentityError, match="does not belong"):
        identity.from_files(str(one.certificate), str(two.key))
    with pytest.raises(IdentityError, match="cannot read"):
        identity.from_files(str(tmp_path / "missing.pem"), str(one.key))


def test_expired_certificate_is_a_clear_error(tmp_path):
    old = mint_client(tmp_path, "old", expired=True)
    with pytest.raises(IdentityError, match="expired at"):
        identity.from_files(str(old.certificate), str(old.key))


def test_pkcs12_bundle(tmp_path):
    issued = mint_client(tmp_path, "p12", dns=["a.example"])
    key = serialization.load_pem_private_key(issued.key.read_bytes(), None)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(issued.certificate.read_bytes())
    bundle = pkcs12.serialize_key_and_certificates(b"p12", key, cert, None,
                                                   serialization.BestAvailableEncryption(b"pw"))
    (tmp_path / "client.p12").write_bytes(bundle)
    assert identity.from_pkcs12(str(tmp_path / "client.p12"), b"pw").certificate == cert
    with pytest.raises(IdentityError, match="PKCS#12"):
        identity.from_pkcs12(str(tmp_path / "client.p12"), b"wrong")


def write_generation(base: Path, generation: int, issued) -> Path:
    directory = base / f"..{generation}"
    directory.mkdir()
    shutil.copy(issued.certificate, directory / "certificates.pem")
    shutil.copy(issued.key, directory / "private_key.pem")
    return directory


def swap(base: Path, directory: Path) -> None:
    temporary = base / "link.tmp"
    os.symlink(directory.name, temporary)
    os.replace(temporary, base / "workload-spiffe-credentials")


def test_rotation_mid_read_never_yields_a_mismatched_pair(tmp_path):
    pairs = [mint_client(tmp_path, f"gen{index}", spiffe=SPIFFE) for index in range(3)]
    base = tmp_path / "secrets"
    base.mkdir()
    swap(base, write_generation(base, 0, pairs[0]))
    stop = threading.Event()

    def writer():
        generation = 1
        while not stop.is_set():
            directory = write_generation(base, generation, pairs[generation % 3])
            previous = os.path.realpath(base / "workload-spiffe-credentials")
            swap(base, directory)
            shutil.rmtree(previous)  # the agent deletes the old directory right away
            generation += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        serials = set()
        for _ in range(300):
            loaded = identity.from_workload_identity_dir(str(base / "workload-spiffe-credentials"), delay=0.001)
            serials.add(loaded.certificate.serial_number)  # _checked proved key and certificate match
    finally:
        stop.set()
        thread.join()
    assert len(serials) >= 2, "the test should have seen rotations"


def test_a_torn_directory_is_retried_then_reported(tmp_path):
    one = mint_client(tmp_path, "one", spiffe=SPIFFE)
    two = mint_client(tmp_path, "two", spiffe=SPIFFE)
    directory = tmp_path / "creds"
    directory.mkdir()
    shutil.copy(one.certificate, directory / "certificates.pem")
    shutil.copy(two.key, directory / "private_key.pem")
    with pytest.raises(IdentityError, match="after 3 tries"):
        identity.from_workload_identity_dir(str(directory), attempts=3, delay=0)


def test_missing_directory_says_what_to_check(tmp_path):
    with pytest.raises(IdentityError, match="managed workload identity"):
        identity.from_workload_identity_dir(str(tmp_path / "nope"))


def test_spiffe_bundle_file_key_first(tmp_path):
    issued = mint_client(tmp_path, "bundle", spiffe=SPIFFE)
    directory = tmp_path / "fs"
    directory.mkdir()
    (directory / identity.BUNDLE_FILE).write_bytes(issued.key.read_bytes() + issued.certificate.read_bytes())
    assert identity.from_workload_identity_dir(str(directory)).certificate.serial_number


def test_certificate_without_a_spiffe_id_is_refused_from_the_workload_directory(tmp_path):
    issued = mint_client(tmp_path, "plain", dns=["a.example"])
    directory = tmp_path / "creds"
    directory.mkdir()
    shutil.copy(issued.certificate, directory / "certificates.pem")
    shutil.copy(issued.key, directory / "private_key.pem")
    with pytest.raises(IdentityError, match="SPIFFE"):
        identity.from_workload_identity_dir(str(directory), attempts=2, delay=0)


class RetryWaits:
    """The loader's retry waits, each replaced by the writer's next step: where a read lands in a write or a
    rotation is then fixed by the test, not by how the scheduler treats two threads on a loaded machine."""

    def __init__(self) -> None:
        self.steps: list[Callable[[], object]] = []
        self.taken: list[float] = []

    def sleep(self, delay: float) -> None:
        self.taken.append(delay)
        if self.steps:
            self.steps.pop(0)()


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> RetryWaits:
    fake = RetryWaits()
    monkeypatch.setattr(identity, "time", SimpleNamespace(sleep=fake.sleep))
    return fake


@pytest.mark.parametrize("written", [0.0, 0.5], ids=["empty", "half"])
@pytest.mark.parametrize("torn", ["certificates.pem", "private_key.pem"])
def test_a_file_caught_mid_write_is_retried_until_complete(tmp_path, waits, torn, written):
    issued = mint_client(tmp_path, "torn", spiffe=SPIFFE)
    directory = tmp_path / "creds"
    directory.mkdir()
    shutil.copy(issued.certificate, directory / "certificates.pem")
    shutil.copy(issued.key, directory / "private_key.pem")
    whole = (directory / torn).read_bytes()
    (directory / torn).write_bytes(whole[: int(len(whole) * written)])  # the writer has truncated, or is halfway
    waits.steps.append(lambda: (directory / torn).write_bytes(whole))  # and finishes during the first wait
    loaded = identity.from_workload_identity_dir(str(directory), attempts=3, delay=0.05)
    assert loaded.certificate_chain_pem == issued.certificate.read_bytes()
    assert loaded.private_key_pem == issued.key.read_bytes()
    assert waits.taken == [0.05]


def test_a_chain_torn_after_its_leaf_is_retried_then_reported(tmp_path, waits):
    issued = mint_client(tmp_path, "chain", spiffe=SPIFFE)
    directory = tmp_path / "creds"
    directory.mkdir()
    leaf = issued.certificate.read_bytes()
    (directory / "certificates.pem").write_bytes(leaf + leaf[: len(leaf) // 2])  # intermediate half-written
    shutil.copy(issued.key, directory / "private_key.pem")
    with pytest.raises(IdentityError, match=r"after 3 tries .*ends inside a PEM block"):
        identity.from_workload_identity_dir(str(directory), attempts=3, delay=0)


def test_an_encrypted_key_is_reported_at_once_not_waited_for(tmp_path, waits):
    issued = mint_client(tmp_path, "locked", spiffe=SPIFFE)
    directory = tmp_path / "creds"
    directory.mkdir()
    shutil.copy(issued.certificate, directory / "certificates.pem")
    key = serialization.load_pem_private_key(issued.key.read_bytes(), None)
    (directory / "private_key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(IdentityError, match="no unencrypted PEM private key"):
        identity.from_workload_identity_dir(str(directory), attempts=3, delay=0.05)
    assert waits.taken == []


def agent_rotation(base: Path, pairs: list, stop: EventType, *, whole_directory: bool) -> None:
    """The guest agent's way: the new files are written aside, the old ones removed, then the new renamed in;
    a reader arriving between the remove and the rename finds nothing there."""
    live = base / "workload-spiffe-credentials"
    generation = 1
    while not stop.is_set():
        staging = write_generation(base, generation, pairs[generation % len(pairs)])
        if whole_directory:
            shutil.rmtree(live)
            time.sleep(0.004)  # the gap, widened so the readers surely land in it
            os.rename(staging, live)
        else:
            for name in ("certificates.pem", "private_key.pem"):
                os.unlink(live / name)
            time.sleep(0.004)
            for name in ("certificates.pem", "private_key.pem"):
                os.rename(staging / name, live / name)
            staging.rmdir()
        generation += 1
        time.sleep(0.02)


@pytest.mark.parametrize("whole_directory", [True, False], ids=["directory", "files"])
def test_reads_during_the_agents_real_rotation_never_fail(tmp_path, whole_directory):
    pairs = [mint_client(tmp_path, f"gen{index}", spiffe=SPIFFE) for index in range(2)]
    base = tmp_path / "secrets"
    base.mkdir()
    os.rename(write_generation(base, 0, pairs[0]), base / "workload-spiffe-credentials")
    # The agent is a process of its own, as on a VM: as a thread it shared the reader's GIL, whose hand-offs
    # at each file read lined its steps up with the reader's tries, and a loaded machine tore 20 in a row.
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    agent = spawn.Process(target=agent_rotation, args=(base, pairs, stop), kwargs={"whole_directory": whole_directory})
    agent.start()
    failures = []
    try:
        for _ in range(40):
            try:
                # A longer bound than the default second: on a loaded machine the agent's process can be
                # descheduled inside its gap for longer than a real agent ever is.
                identity.from_workload_identity_dir(str(base / "workload-spiffe-credentials"), attempts=200)
            except IdentityError as error:
                failures.append(str(error))
            time.sleep(0.003)
    finally:
        stop.set()
        agent.join(timeout=30)
    assert agent.exitcode == 0
    assert failures == []


def test_a_read_in_the_agents_remove_then_rename_gap_waits_for_the_rename(tmp_path, waits):
    issued = mint_client(tmp_path, "next", spiffe=SPIFFE)
    base = tmp_path / "secrets"
    base.mkdir()
    live = base / "workload-spiffe-credentials"
    staging = write_generation(base, 1, issued)  # the new credentials are aside and the old ones removed: the gap
    waits.steps += [lambda: None, lambda: os.rename(staging, live)]  # the gap outlasts one wait, closes in the next
    loaded = identity.from_workload_identity_dir(str(live), attempts=5, delay=0.05)
    assert loaded.source == str(live)
    assert loaded.private_key_pem == issued.key.read_bytes()
    assert waits.taken == [0.05, 0.05]


def test_a_directory_still_missing_after_the_bound_keeps_the_clear_message(tmp_path, waits):
    with pytest.raises(IdentityError, match="does not exist: is managed workload identity enabled"):
        identity.from_workload_identity_dir(str(tmp_path / "workload-spiffe-credentials"), attempts=4, delay=0.05)
    assert waits.taken == [0.05] * 3  # the whole bound waited out: a rotation's gap would have closed in it


def test_a_directory_whose_parent_is_missing_is_reported_at_once(tmp_path, waits):
    with pytest.raises(IdentityError, match="does not exist: is managed workload identity enabled"):
        identity.from_workload_identity_dir(str(tmp_path / "secrets" / "workload-spiffe-credentials"), attempts=4,
                                            delay=0.05)
    assert waits.taken == []  # no agent can rename a directory into a parent that is not there
