"""Secrets kept out of what the gateway prints: credentials in URLs, values of header lists."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def mask_url(value: str) -> str:
    """The URL with the password of its user:password@ (or a lone token) replaced; anything else unchanged."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if "@" not in parts.netloc:
        return value
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    masked = f"{user}:{MASK}" if colon else MASK
    return urlunsplit(parts._replace(netloc=f"{masked}@{host}"))


def mask_header_values(value: str) -> str:
    """`key=value,key=value` with every value replaced: the keys say what is sent, the values may be tokens."""
    pairs = [item.partition("=") for item in value.split(",") if item.strip()]
    return ",".join(f"{key.strip()}={MASK}" if sep else MASK for key, sep, _ in pairs)
