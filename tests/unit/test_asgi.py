import pytest

from gateway.asgi import host_of, made_at_startup


@pytest.mark.parametrize(
    ("headers", "host"),
    [
        ([(b"host", b"shop.example:8080"), (b"accept", b"*/*")], "shop.example:8080"),
        ([(b"accept", b"*/*"), (b"host", b"first.example"), (b"host", b"second.example")], "first.example"),
        ([(b"accept", b"*/*")], ""),
        ([(b"host", "caf\u00e9.example".encode("latin-1"))], "caf\u00e9.example"),
        ([(b"x-host", b"not.this")], ""),
    ],
    ids=["with-port", "first-wins", "none", "latin-1", "only-exact-name"],
)
def test_host_of_is_the_first_host_header(headers, host):
    assert host_of(headers) == host


def test_made_at_startup_gives_the_resource():
    resource = object()
    assert made_at_startup(resource) is resource


def test_made_at_startup_refuses_a_request_before_startup():
    with pytest.raises(RuntimeError, match="only after its lifespan startup"):
        made_at_startup(None)
