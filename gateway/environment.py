"""What the environment holds beyond the settings: mistyped GATEWAY_ variables and Kubernetes service links.

Pure: the variables and the known names in, one warning line per finding out. pydantic-settings ignores a variable
it does not know, so without this `GATEWAY_SAMPLERATE=0.1` would leave the rate at its default in silence.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from pathlib import Path

from dotenv import dotenv_values

from gateway.settings import ENV_PREFIX, SERVICE_LINK_VALUE

# Kubernetes' service links for a Service named `gateway` (or `gateway-<x>`): GATEWAY_SERVICE_HOST,
# GATEWAY_SERVICE_PORT, GATEWAY_SERVICE_PORT_<NAME>, GATEWAY_PORT=tcp://..., GATEWAY_PORT_8080_TCP[_PROTO|_PORT|_ADDR].
_SERVICE_LINK_NAME = re.compile(
    ENV_PREFIX + r"(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT_[0-9]+_(?:TCP|UDP|SCTP)\w*)"
)
_SERVICE_LINK_PORT_NAME = re.compile(ENV_PREFIX + r"(?:[A-Z0-9_]+_)?PORT")


def gateway_variables(environ: Mapping[str, str], env_file: Path | None) -> dict[str, str]:
    """The GATEWAY_ variables as the settings see them: the environment wins over the .env file."""
    found: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        found.update({name: value or "" for name, value in dotenv_values(env_file).items()})
    found.update(environ)
    return {name.upper(): value for name, value in found.items() if name.upper().startswith(ENV_PREFIX)}


def environment_warnings(variables: Mapping[str, str], known: Collection[str]) -> list[str]:
    """A line per unknown GATEWAY_ variable (with the closest known name), one for all service links."""
    warnings: list[str] = []
    links: list[str] = []
    for name in sorted(variables):
        value = variables[name]
        if is_service_link(name, value):
            links.append(f"{name}={value!r}" if name in known else name)
        elif name not in known:
            warnings.append(_unknown(name, known))
    if links:
        overridden = [link for link in links if "=" in link]
        kept = f"; {', '.join(overridden)} ignored: the setting keeps its default" if overridden else ""
        warnings.append(
            f"{', '.join(link.partition('=')[0] for link in links)}: set by Kubernetes for a Service named like the "
            f"gateway{kept}; set enableServiceLinks: false in the pod spec to keep them out"
        )
    return warnings


def is_service_link(name: str, value: str) -> bool:
    if _SERVICE_LINK_NAME.fullmatch(name):
        return True
    return bool(_SERVICE_LINK_PORT_NAME.fullmatch(name) and SERVICE_LINK_VALUE.fullmatch(value.strip()))


def _unknown(name: str, known: Collection[str]) -> str:
    # Compared without the prefix, which every name shares and which would make any two names look alike.
    by_field = {known_name.removeprefix(ENV_PREFIX): known_name for known_name in known}
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), list(by_field), n=1, cutoff=0.7)
    hint = f"; did you mean {by_field[close[0]]}?" if close else " (ignored)"
    return f"{name}: unknown setting{hint}"
