"""Secret Manager v1: secrets, their numbered versions, payload access, and the secret's IAM policy.

Secret Manager names resources with the project NUMBER whatever the request
used, refuses a payload over 64 KiB or one whose CRC32C does not match, and
answers FAILED_PRECONDITION when a disabled or destroyed version is accessed.
``accessible`` is what Cloud Functions / Cloud Run check when a revision
mounts a secret: the version must be enabled and the runtime service account
must hold Secret Accessor on the secret or on the project.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from typing import Any

from devtools.control_plane.iam_policy import policy_store
from devtools.control_plane.server import (
    Api,
    ControlPlane,
    GoogleError,
    Request,
    failed_precondition,
    invalid,
    require,
)

ACCESSOR = "roles/secretmanager.secretAccessor"
MAX_PAYLOAD = 65536
_SECRET_ID = re.compile(r"[a-zA-Z0-9_-]{1,255}")
_SECRET = r"/v1/projects/([^/]+)/secrets/([^/:]+)"
_VERSION = rf"{_SECRET}/versions/([^/:]+)"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _etag() -> str:
    return f'"{int(datetime.datetime.now().timestamp() * 1_000_000):x}"'


class SecretManagerApi(Api):
    prefix = "secretmanager"
    service = "secretmanager.googleapis.com"

    def __init__(self, plane: ControlPlane):
        super().__init__(plane)
        # keyed by projects/<project id>/secrets/<id>[/versions/<n>]; the stored names carry the number
        self.secrets: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.payloads: dict[str, bytes] = {}
        self._policies: Any = None
        self.route("GET", r"/v1/projects/([^/]+)/secrets", self.list)
        self.route("POST", r"/v1/projects/([^/]+)/secrets", self.create, "create")
        self.route("GET", _SECRET, self.get)
        self.route("PATCH", _SECRET, self.patch, "update")
        self.route("DELETE", _SECRET, self.delete, "delete")
        self.route("POST", rf"{_SECRET}:addVersion", self.add_version, "create")
        self.route("GET", rf"{_SECRET}:getIamPolicy", self.get_iam_policy)
        self.route("POST", rf"{_SECRET}:setIamPolicy", self.set_iam_policy, "setIamPolicy")
        self.route("GET", rf"{_SECRET}/versions", self.list_versions)
        self.route("GET", _VERSION, self.get_version)
        self.route("GET", rf"{_VERSION}:access", self.access)
        for verb, state in (("enable", "ENABLED"), ("disable", "DISABLED"), ("destroy", "DESTROYED")):
            self.route("POST", rf"{_VERSION}:{verb}", self._state_changer(state), verb)

    @property
    def policies(self) -> Any:
        if self._policies is None:
            self._policies = policy_store(self.plane)
        return self._policies

    # -- names ---------------------------------------------------------------------------------------------
    def key(self, project: str, secret_id: str) -> str:
        return f"projects/{self.plane.project(project)}/secrets/{secret_id}"

    def google_name(self, key: str) -> str:
        return key.replace(f"projects/{self.plane.project_id}/", f"projects/{self.plane.project_number}/", 1)

    def secret(self, project: str, secret_id: str) -> tuple[str, dict[str, Any]]:
        key = self.key(project, secret_id)
        if key not in self.secrets:
            raise GoogleError(404, f"Secret [{self.google_name(key)}] not found.", "NOT_FOUND")
        return key, self.secrets[key]

    def version(self, project: str, secret_id: str, version: str) -> tuple[str, dict[str, Any]]:
        key, _ = self.secret(project, secret_id)
        if version == "latest":  # the newest version whatever its state: a disabled one is not skipped
            numbers = [int(name.rsplit("/", 1)[1]) for name in self.versions if name.startswith(f"{key}/versions/")]
            if not numbers:
                raise GoogleError(404, f"Secret [{self.google_name(key)}] not found or has no versions.", "NOT_FOUND")
            version = str(max(numbers))
        elif not version.isdigit():
            raise invalid(f"Invalid version id '{version}': a version is a number or 'latest'")
        version_key = f"{key}/versions/{version}"
        if version_key not in self.versions:
            raise GoogleError(404, f"Secret Version [{self.google_name(version_key)}] not found.", "NOT_FOUND")
        return version_key, self.versions[version_key]

    # -- secrets -------------------------------------------------------------------------------------------
    def create(self, request: Request, project: str) -> dict[str, Any]:
        secret_id = request.arg("secretId") or ""
        if not _SECRET_ID.fullmatch(secret_id):
            raise invalid("Secret ID must match [a-zA-Z0-9_-]{1,255}: only letters, digits, hyphens and "
                          f"underscores, at most 255 characters; got '{secret_id}'")
        key = self.key(project, secret_id)
        if key in self.secrets:
            raise GoogleError(409, f"Secret [{self.google_name(key)}] already exists.", "ALREADY_EXISTS")
        body = request.json()
        require(body, "replication")
        self._check_replication(body["replication"])
        secret = {**{k: v for k, v in body.items() if k in ("replication", "labels", "annotations", "topics",
                                                             "expireTime", "ttl", "versionAliases")},
                  "name": self.google_name(key), "createTime": now(), "etag": _etag()}
        self.secrets[key] = secret
        return secret

    @staticmethod
    def _check_replication(replication: Any) -> None:
        kinds = [kind for kind in ("automatic", "userManaged") if isinstance(replication, dict) and kind in replication]
        if len(kinds) != 1:
            raise invalid("Secret.replication must set exactly one of 'automatic' or 'userManaged'")
        if kinds == ["userManaged"]:
            replicas = replication["userManaged"].get("replicas") or []
            if not replicas or not all(replica.get("location") for replica in replicas):
                raise invalid("Secret.replication.user_managed.replicas must name at least one location")

    def list(self, request: Request, project: str) -> dict[str, Any]:
        prefix = f"projects/{self.plane.project(project)}/secrets/"
        found = [secret for key, secret in sorted(self.secrets.items()) if key.startswith(prefix)]
        return {"secrets": found, "totalSize": len(found)} if found else {}

    def get(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        return self.secret(project, secret_id)[1]

    def patch(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        _, secret = self.secret(project, secret_id)
        mask = request.arg("updateMask")
        if not mask:
            raise invalid("Invalid value for field 'update_mask': required field not set")
        body = request.json()
        for field in mask.split(","):
            if field not in ("labels", "annotations", "expire_time", "ttl", "topics", "version_aliases"):
                raise invalid(f"Invalid update_mask path '{field}'")
            camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), field)
            if camel in body:
                secret[camel] = body[camel]
            else:
                secret.pop(camel, None)
        secret["etag"] = _etag()
        return secret

    def delete(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        key, secret = self.secret(project, secret_id)
        if request.arg("etag") and request.arg("etag") != secret["etag"]:
            raise GoogleError(409, "The etag provided does not match the current etag of the secret.", "ABORTED")
        del self.secrets[key]
        for version_key in [name for name in self.versions if name.startswith(f"{key}/versions/")]:
            del self.versions[version_key]
            self.payloads.pop(version_key, None)
        self.policies.policies.pop(key, None)
        return {}

    # -- versions ------------------------------------------------------------------------------------------
    def add_version(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        key, _ = self.secret(project, secret_id)
        payload = request.json().get("payload") or {}
        try:
            data = base64.b64decode(payload.get("data") or "", validate=True)
        except binascii.Error as error:
            raise invalid(f"Invalid value at 'payload.data' (TYPE_BYTES), Base64 decoding failed: {error}") from error
        if not data:
            raise invalid("Invalid value for field 'payload.data': required field not set")
        if len(data) > MAX_PAYLOAD:
            raise invalid(f"Secret payload size is larger than the maximum of {MAX_PAYLOAD} bytes.")
        checksum = payload.get("dataCrc32c")
        if checksum is not None and int(checksum) != crc32c(data):
            raise invalid("The provided data_crc32c does not match the CRC32C of the payload data.")
        numbers = [int(name.rsplit("/", 1)[1]) for name in self.versions if name.startswith(f"{key}/versions/")]
        version_key = f"{key}/versions/{max(numbers, default=0) + 1}"
        version = {"name": self.google_name(version_key), "createTime": now(), "state": "ENABLED",
                   "replicationStatus": {"automatic": {}}, "etag": _etag(),
                   "clientSpecifiedPayloadChecksum": checksum is not None}
        self.versions[version_key] = version
        self.payloads[version_key] = data
        return version

    def list_versions(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        key, _ = self.secret(project, secret_id)
        found = sorted((version for name, version in self.versions.items() if name.startswith(f"{key}/versions/")),
                       key=lambda version: -int(version["name"].rsplit("/", 1)[1]))
        return {"versions": found, "totalSize": len(found)} if found else {}

    def get_version(self, request: Request, project: str, secret_id: str, version: str) -> dict[str, Any]:
        return self.version(project, secret_id, version)[1]

    def access(self, request: Request, project: str, secret_id: str, version: str) -> dict[str, Any]:
        version_key, found = self.version(project, secret_id, version)
        if found["state"] != "ENABLED":
            raise failed_precondition(f"Secret Version [{found['name']}] is in {found['state']} state.")
        data = self.payloads[version_key]
        return {"name": found["name"],
                "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(crc32c(data))}}

    def _state_changer(self, state: str) -> Any:
        def change(request: Request, project: str, secret_id: str, version: str) -> dict[str, Any]:
            version_key, found = self.version(project, secret_id, version)
            etag = request.json().get("etag")
            if etag and etag != found["etag"]:
                raise GoogleError(409, "The etag provided does not match the current etag of the secret version.",
                                  "ABORTED")
            if found["state"] == "DESTROYED":
                raise failed_precondition(f"Secret Version [{found['name']}] is in DESTROYED state.")
            found["state"] = state
            found["etag"] = _etag()
            if state == "DESTROYED":
                found["destroyTime"] = now()
                self.payloads.pop(version_key, None)
            return found

        return change

    # -- IAM -----------------------------------------------------------------------------------------------
    def get_iam_policy(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        key, _ = self.secret(project, secret_id)
        return self.policies.get(key)

    def set_iam_policy(self, request: Request, project: str, secret_id: str) -> dict[str, Any]:
        key, _ = self.secret(project, secret_id)
        return self.policies.set(key, request)

    def accessible(self, secret: str, version: str, member: str) -> str | None:
        """None when ``member`` may read the secret version as a revision would, else Google's refusal."""
        match = re.fullmatch(r"projects/([^/]+)/secrets/([^/]+)", secret)
        project, secret_id = match.groups() if match else (self.plane.project_id, secret)
        account = member.split(":", 1)[-1]
        denied = (f"Permission denied on secret: {self.google_name(self.key(project, secret_id))}/versions/{version} "
                  f"for Revision service account {account}. The service account used must be granted the "
                  f"'Secret Manager Secret Accessor' role ({ACCESSOR}) at the secret, project or higher level.")
        try:
            key, _ = self.secret(project, secret_id)
            _, found = self.version(project, secret_id, version)
        except GoogleError as error:
            return f"{denied} ({error.message})" if error.code == 404 else error.message
        if found["state"] != "ENABLED":
            return f"Secret Version [{found['name']}] is in {found['state']} state."
        crm = self.plane.apis.get("crm")
        project_store = getattr(crm, "policies", None)
        project_members = project_store.members(self.plane.project(project), ACCESSOR) if project_store else set()
        if member in self.policies.members(key, ACCESSOR) or member in project_members:
            return None
        return denied


APIS: tuple[type[Api], ...] = (SecretManagerApi,)
