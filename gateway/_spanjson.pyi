# The C span encoder (gateway/_spanjson.c), used through gateway.span_json.
from collections.abc import Callable, Sequence

def bind(exchange_type: type, /) -> None: ...
def encode_exchanges(
    exchanges: Sequence[object],
    local: bytes,
    hosts: dict[str | None, bytes],
    upstreams: dict[int, tuple[object, bytes]],
    tag_sets: dict[tuple[tuple[str, str], ...], bytes],
    fallback: Callable[..., bytes],
    /,
) -> bytes: ...
