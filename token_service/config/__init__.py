"""Configuration: environment variables, validated once at cold start.

``load_settings`` reads a plain mapping (``os.environ`` in production), checks
every variable and raises one ``ConfigurationError`` that lists every problem,
so a misconfigured deployment fails before it serves a single wrong token.
``headers`` holds the load balancer's header names, ``settings`` the rest.
"""

from token_service.config.headers import (
    MTLS_HEADER_DEFAULTS,
    MtlsHeaderNames,
    ProxySecretSettings,
    mtls_header_names,
    proxy_secret_settings,
)
from token_service.config.settings import GoogleSettings, Settings, SignerSettings, load_settings

__all__ = ["MTLS_HEADER_DEFAULTS", "GoogleSettings", "MtlsHeaderNames", "ProxySecretSettings", "Settings",
           "SignerSettings", "load_settings", "mtls_header_names", "proxy_secret_settings"]
