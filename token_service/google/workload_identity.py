"""The workload identity pool provider that trusts this broker, and the names Google gives it.

https://cloud.google.com/iam/docs/workload-identity-federation
"""

from __future__ import annotations

from typing import NamedTuple

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class WorkloadIdentityProvider(NamedTuple):
    """The workload identity pool provider that trusts this broker as an OIDC issuer."""

    project_number: str
    pool_id: str
    provider_id: str

    @property
    def resource_name(self) -> str:
        return (
            f"projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool_id}/providers/{self.provider_id}"
        )

    @property
    def sts_audience(self) -> str:
        """The audience Google STS expects in a token exchange request."""
        return f"//iam.googleapis.com/{self.resource_name}"

    @property
    def token_audience(self) -> str:
        """The ``aud`` of issued ID tokens: the provider's default allowed audience."""
        return f"https://iam.googleapis.com/{self.resource_name}"

    def principal(self, subject: str) -> str:
        return (
            f"principal://iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool_id}/subject/{subject}"
        )
