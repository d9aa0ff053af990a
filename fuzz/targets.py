"""One fuzz target per parser of client or operator input: bytes in, invariants checked, nothing else raised.

Each target takes raw bytes, as atheris hands them over (`python -m fuzz.run`), and reads them as the parser's input
would arrive: a header value, header lines ("name: value" per line), a route file, environment lines
("NAME=value"). tests/reliability/test_fuzz_parsers.py runs the same targets under hypothesis in `make test`.
A target fails by raising: an AssertionError for a broken invariant, anything else for a parser that raised.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from urllib.parse import unquote_to_bytes

from pydantic import ValidationError

from gateway.context import MAX_64BIT, MAX_128BIT, Extracted, TraceContext
from gateway.forwarding import (
    HOP_BY_HOP,
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    downstream_response_headers,
    request_target_problem,
    upstream_request_headers,
)
from gateway.propagation import extract_context, is_trace_header
from gateway.propagation.b3 import extract, format_multi, format_single, parse_multi, parse_single
from gateway.propagation.w3c import format_traceparent, parse_traceparent, parse_tracestate
from gateway.route_file import RouteFileError, parse_routes
from gateway.settings import ENV_PREFIX, Settings, describe
from gateway.threshold import parse_ot, with_ot

Target = Callable[[bytes], None]
Headers = list[tuple[bytes, bytes]]

UPSTREAM_AUTHORITY = b"web-svc.emojivoto:80"
ROUTE_FILE = "fuzz-routes.yaml"
_DOT_SEGMENT = re.compile(rb"(?:\A|[/\\])\.\.?(?:[/\\]|\Z)")


def header_lines(data: bytes) -> Headers:
    """Lines of "name: value" as an ASGI server hands them over: names lowercased, values as sent."""
    headers = []
    for line in data.split(b"\n"):
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip(b" \t")))
    return headers


def check_extracted(extracted: Extracted) -> None:
    if extracted.invalid is not None:
        assert extracted.context is None, extracted
    context = extracted.context
    if context is not None:
        assert 0 < context.trace_id <= MAX_128BIT, context
        assert 0 < context.span_id <= MAX_64BIT, context
        assert context.parent_id is None or 0 < context.parent_id <= MAX_64BIT, context
        assert not context.debug or context.sampled, context


def b3_single(data: bytes) -> None:
    extracted = parse_single(data.decode("latin-1"))
    check_extracted(extracted)
    if extracted.context is not None:
        assert parse_single(format_single(extracted.context)).context == extracted.context


def b3_multi(data: bytes) -> None:
    fields = [field.decode("latin-1") or None for field in data.split(b"\n")[:5]]
    fields += [None] * (5 - len(fields))
    extracted = parse_multi(*fields)
    check_extracted(extracted)
    if extracted.context is not None:
        assert extract(format_multi(extracted.context)).context == extracted.context


def traceparent(data: bytes) -> None:
    extracted = parse_traceparent(data.decode("latin-1"))
    check_extracted(extracted)
    context = extracted.context
    if context is not None:
        assert context.parent_id is None and context.sampled is not None
        assert parse_traceparent(format_traceparent(context)).context == context


def tracestate(data: bytes) -> None:
    values = [line.decode("latin-1") for line in data.split(b"\n")]
    state = parse_tracestate(values)
    if state is not None:
        members = [member for member in state.split(",") if member]
        assert len(members) <= 32
        assert len({member.partition("=")[0] for member in members}) == len(members), state
        assert parse_tracestate([state]) == state
        # The `ot` entry (consistent sampling's th and rv): read leniently, and written back as a valid tracestate.
        ot = parse_ot(state)
        rewritten = with_ot(state, ot)
        assert parse_tracestate([rewritten]) == rewritten, rewritten
        assert parse_ot(rewritten) == ot, rewritten


def trace_headers(data: bytes) -> None:
    """Every trace format at once, as a trusted client could send them, duplicates and conflicts included."""
    extracted = extract_context(header_lines(data))
    check_extracted(extracted)
    if extracted.context is not None:
        context = extracted.context
        again = extract_context(format_multi(TraceContext(context.trace_id, context.span_id, None, True)))
        assert again.context is not None and again.context.trace_id == context.trace_id


def forwarding(data: bytes) -> None:
    """The request headers that go upstream and the response headers that go back, from arbitrary header lines."""
    first, _, rest = data.partition(b"\n")
    client_host = first.decode("latin-1") or None
    headers = header_lines(rest)
    for preserve_host in (False, True):
        forwarded = upstream_request_headers(
            headers,
            client_host=client_host,
            scheme="https",
            upstream_authority=UPSTREAM_AUTHORITY,
            preserve_host=preserve_host,
        )
        out = forwarded.headers
        names = [name for name, _ in out]
        assert names[0] == b"host" and names.count(b"host") == 1, names
        assert not preserve_host or forwarded.host == "" or out[0][1].decode("latin-1").lower() == forwarded.host
        assert not HOP_BY_HOP & set(names), names
        assert not any(is_trace_header(name) or name.startswith(b"l5d-") for name in names), names
        assert names.count(X_FORWARDED_PROTO) == 1 and out[-1] == (X_FORWARDED_PROTO, b"https")
        assert names.count(X_FORWARDED_FOR) <= 1 and names.count(X_FORWARDED_HOST) <= 1
        if client_host:
            forwarded_for, peer = dict(out)[X_FORWARDED_FOR], client_host.encode("latin-1")
            assert forwarded_for == peer or forwarded_for.endswith(b", " + peer), forwarded_for
        # Nothing is made up: every other header went in exactly as it came.
        sent = set(headers)
        own = {b"host", X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO}
        assert all(header in sent for header in out if header[0] not in own)
    back = downstream_response_headers(headers)
    assert not HOP_BY_HOP & {name for name, _ in back}
    assert all(header in headers for header in back)


def request_target(data: bytes) -> None:
    problem = request_target_problem(data)
    if problem is None and data[:1] == b"/":
        path = unquote_to_bytes(data.partition(b"?")[0].partition(b"#")[0])
        assert _DOT_SEGMENT.search(path) is None, data


def route_file(data: bytes) -> None:
    try:
        routes = parse_routes(data.decode("utf-8", "replace"), ROUTE_FILE)
    except RouteFileError as exc:
        message = str(exc)
        assert message.startswith(ROUTE_FILE) and "\n" not in message, message
        return
    assert len({route.name for route in routes}) == len(routes)
    for route in routes:
        assert route.name and route.path_prefix.startswith("/"), route
        assert route.sample_rate is None or 0.0 <= route.sample_rate <= 1.0, route
        assert route.upstream.url_for("/x", b"").startswith(("http://", "https://")), route


def settings(data: bytes) -> None:
    """GATEWAY_* variables as lines of NAME=value: valid settings, or one line per problem naming its variable."""
    environment = {}
    for line in data.split(b"\n"):
        name, equals, value = line.decode("utf-8", "replace").partition("=")
        name = ENV_PREFIX + name.strip().upper()
        if equals and "\x00" not in name + value and name.isidentifier():
            environment[name] = value
    with _environment(environment):
        try:
            Settings(_env_file=None)
        except ValidationError as exc:
            for error in exc.errors():
                problem = describe(error)
                assert problem.startswith(ENV_PREFIX) and "\n" not in problem.strip(), problem


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    saved = {name: value for name, value in os.environ.items() if name.startswith(ENV_PREFIX)}
    for name in saved:
        del os.environ[name]
    os.environ.update(variables)
    try:
        yield
    finally:
        for name in variables:
            os.environ.pop(name, None)
        os.environ.update(saved)


TARGETS: dict[str, Target] = {
    "b3_single": b3_single,
    "b3_multi": b3_multi,
    "traceparent": traceparent,
    "tracestate": tracestate,
    "trace_headers": trace_headers,
    "forwarding": forwarding,
    "request_target": request_target,
    "route_file": route_file,
    "settings": settings,
}

# A few valid and nearly valid inputs per target, to start the fuzzer from.
SEEDS: dict[str, list[bytes]] = {
    "b3_single": [
        b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        b"e457b5a2e4d86bd1-e457b5a2e4d86bd1-d",
        b"0",
        b"80f198ee56343ba8-e457b5a2e4d86bd1-05e3ac9a4f6e3b90",
    ],
    "b3_multi": [
        b"80f198ee56343ba864fe8b2a57d3eff7\ne457b5a2e4d86bd1\n05e3ac9a4f6e3b90\n1\n",
        b"\n\n\ntrue\n1",
        b"80f198ee56343ba8\ne457b5a2e4d86bd1\n\n0\n",
    ],
    "traceparent": [
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        b"cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-will-be-like",
    ],
    "tracestate": [
        b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        b"a@b=c\nd=e, f=g",
        b"ot=th:8;rv:00112233445566;x:y,rojo=1",
        b"ot=th:;rv:12,ot2=th:0",
    ],
    "trace_headers": [
        b"b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\n"
        b"traceparent: 00-80f198ee56343ba864fe8b2a57d3eff7-b7ad6b7169203331-01\ntracestate: a=b",
        b"x-b3-traceid: 80f198ee56343ba8\nx-b3-spanid: e457b5a2e4d86bd1\nx-b3-sampled: 1\nx-b3-flags: 1",
    ],
    "forwarding": [
        b"203.0.113.7\nhost: emojivoto.example.com\nconnection: keep-alive, x-private\nx-private: 1\n"
        b"x-forwarded-for: 10.0.0.1\nl5d-dst-override: admin:80\naccept: */*",
    ],
    "request_target": [b"/api/vote?choice=:doughnut:", b"/a/%2e%2e/b", b"http://example.com/x", b"*"],
    "route_file": [
        b"routes:\n  - name: vote\n    path_prefix: /api/vote\n    upstream: http://web-svc:80\n    sample_rate: 1.0\n"
        b"  - host: '*.example.com'\n    upstream: https://web-svc:8443/base\n    tags: {team: web}\n",
    ],
    "settings": [
        b"UPSTREAM_URL=http://web-svc:80\nSAMPLE_RATE=0.5\nTRUSTED_CIDRS=10.0.0.0/8, ::1/128\n"
        b"PROPAGATION=b3,tracecontext",
        b"UPSTREAM_URL=ftp://x\nPORT=70000\nCLIENT_HEADER_TIMEOUT=0",
    ],
}
