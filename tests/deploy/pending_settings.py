"""Settings that deploy/ uses before their branches land: each name, and the issue that adds it to Settings.

A test that needs one of these features skips, naming the issue, only while `Settings.model_fields` lacks it; once
the branches are merged, every check runs. Remove a name from here when its setting has landed.
"""

from __future__ import annotations

import pytest

from gateway.settings import ENV_PREFIX, Settings

PENDING = {
    "GATEWAY_TLS_CERT_FILE": 17,
    "GATEWAY_TLS_KEY_FILE": 17,
    "GATEWAY_TLS_CERTS_DIR": 17,
    "GATEWAY_TLS_RELOAD_INTERVAL": 17,
    "GATEWAY_TLS_HANDSHAKE_TIMEOUT": 17,
    "GATEWAY_HTTP_REDIRECT_PORT": 17,
    "GATEWAY_OTLP_URL": 19,
    "GATEWAY_OTLP_HEADERS": 19,
}


def exists(variable: str) -> bool:
    return variable.removeprefix(ENV_PREFIX).lower() in Settings.model_fields


def known(variable: str) -> bool:
    """A setting of Settings, or one a pending branch adds."""
    return exists(variable) or variable in PENDING


def require(*variables: str) -> None:
    """Skips the calling test while any of these settings has not landed, saying which issue brings it."""
    missing = [variable for variable in variables if not exists(variable)]
    if missing:
        issues = sorted({PENDING[variable] for variable in missing})
        pytest.skip(f"{', '.join(missing)} not in gateway/settings.py yet (issue {', '.join(map(str, issues))})")
