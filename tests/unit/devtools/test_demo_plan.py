"""What `python -m gateway_devtools.demo` starts for a given environment, and the one line it fails with when it
cannot."""

from __future__ import annotations

import pytest

from gateway_devtools.demo.environment import (
    BOT,
    COLLECTOR,
    EMOJI,
    EMOJI_GRPC,
    GATEWAY,
    GATEWAY_HTTPS,
    VOTING,
    WEB,
    DemoError,
)
from gateway_devtools.demo.plan import Plan, banner, make_plan
from gateway_devtools.mesh.tracing import Misbehaviour

PYTHON = "/venv/bin/python"


def children(plan: Plan) -> dict[str, tuple[str, ...]]:
    return {child.name: child.args for stage in plan.stages for child in stage}


def option(args: tuple[str, ...], name: str) -> str:
    return args[args.index(name) + 1]


def test_defaults_start_everything_in_order_on_the_usual_ports():
    plan = make_plan({}, PYTHON)

    assert [[child.name for child in stage] for stage in plan.stages] == [
        [COLLECTOR],
        [EMOJI, VOTING, WEB, EMOJI_GRPC],
        [GATEWAY],
        [BOT],
    ]
    assert dict(plan.ports) == {
        "gateway": 8080,
        "gateway admin": 9901,
        "collector": 9411,
        "web": 8081,
        "emoji": 8082,
        "voting": 8083,
        "gateway-https": 8443,
        "gateway-https admin": 9902,
        "emoji-grpc": 8084,
    }
    [gateway] = plan.stages[2]
    (routes,) = plan.files
    assert gateway.args == (PYTHON, "-m", "gateway")
    assert gateway.ready_url == "http://127.0.0.1:9901/ready"
    assert {key: gateway.env[key] for key in gateway.env if key.startswith("GATEWAY_")} == {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": "8080",
        "GATEWAY_ADMIN_PORT": "9901",
        "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:8081",
        "GATEWAY_ZIPKIN_URL": "http://127.0.0.1:9411/api/v2/spans",
        "GATEWAY_OTLP_URL": "",
        "GATEWAY_SAMPLE_RATE": "0.5",
        "GATEWAY_ACCESS_LOG": "false",
        "GATEWAY_ROUTES_FILE": str(routes),
    }
    # gRPC calls to EmojiService go to emoji-grpc over h2c; the route file is written before anything starts.
    assert "path_prefix: /emojivoto.v1.EmojiService" in plan.files[routes]
    assert "upstream: http://127.0.0.1:8084\n    protocol: h2c" in plan.files[routes]
    assert option(children(plan)[EMOJI_GRPC], "--zipkin-url") == "http://127.0.0.1:9411/api/v2/spans"
    web = children(plan)[WEB]
    assert option(web, "--emoji-url") == "http://127.0.0.1:8082"
    assert option(web, "--voting-url") == "http://127.0.0.1:8083"
    assert option(web, "--zipkin-url") == "http://127.0.0.1:9411/api/v2/spans"
    assert option(children(plan)[BOT], "--target") == "http://127.0.0.1:8080"


def test_environment_moves_ports_sets_the_rate_and_passes_misbehaviour_through():
    plan = make_plan(
        {
            "GATEWAY_PORT": "18080",
            "DEMO_COLLECTOR_PORT": "19411",
            "GATEWAY_SAMPLE_RATE": "0.25",
            "GATEWAY_ACCESS_LOG": "true",
            "DEMO_MISBEHAVE": "voting=drop-spans, web=no-propagate",
            "DEMO_BOT": "0",
        },
        PYTHON,
    )

    started = children(plan)
    assert BOT not in started
    assert option(started[VOTING], "--misbehave") == "drop-spans"
    assert option(started[WEB], "--misbehave") == "no-propagate"
    assert option(started[EMOJI], "--misbehave") == "none"
    assert option(started[EMOJI], "--zipkin-url") == "http://127.0.0.1:19411/api/v2/spans"
    [gateway] = plan.stages[2]
    assert (gateway.env["GATEWAY_PORT"], gateway.env["GATEWAY_SAMPLE_RATE"]) == ("18080", "0.25")
    assert gateway.env["GATEWAY_ACCESS_LOG"] == "true"
    assert plan.misbehaviour == {VOTING: Misbehaviour.DROP_SPANS, WEB: Misbehaviour.NO_PROPAGATE}


def test_banner_names_every_url_and_what_to_expect():
    text = banner(make_plan({"DEMO_MISBEHAVE": "voting=ignore-decision"}, PYTHON))

    assert "http://127.0.0.1:8080/" in text
    assert "http://127.0.0.1:9411/" in text
    assert "http://127.0.0.1:9901/metrics" in text
    assert "samples 50% of requests (GATEWAY_SAMPLE_RATE=0.5)" in text
    assert "DEMO_BOT=0 turns it off" in text
    assert "Ctrl-C stops everything." in text
    assert "voting=ignore-decision; expect partial traces" in text


@pytest.mark.parametrize(
    ("exporter", "zipkin", "otlp"),
    [
        ("otlp", "", "http://127.0.0.1:9411/v1/traces"),
        ("both", "http://127.0.0.1:9411/api/v2/spans", "http://127.0.0.1:9411/v1/traces"),
        ("zipkin", "http://127.0.0.1:9411/api/v2/spans", ""),
    ],
)
def test_demo_exporter_picks_how_the_gateway_reports_to_the_same_collector(exporter: str, zipkin: str, otlp: str):
    [gateway] = make_plan({"DEMO_EXPORTER": exporter}, PYTHON).stages[2]
    assert (gateway.env["GATEWAY_ZIPKIN_URL"], gateway.env["GATEWAY_OTLP_URL"]) == (zipkin, otlp)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT must be a port number from 1 to 65535, got 'http'"),
        ({"DEMO_WEB_PORT": "70000"}, "DEMO_WEB_PORT must be a port number from 1 to 65535, got '70000'"),
        ({"DEMO_WEB_PORT": "8080"}, "DEMO_WEB_PORT is 8080, already the gateway's port"),
        ({"DEMO_MISBEHAVE": "gateway=drop-spans"}, "DEMO_MISBEHAVE: 'gateway' is not one of web, emoji, voting"),
        ({"DEMO_MISBEHAVE": "voting=sulk"}, "DEMO_MISBEHAVE: 'sulk' is not one of none, ignore-decision, drop-spans"),
        ({"DEMO_BOT": "maybe"}, "DEMO_BOT must be 1 or 0, got 'maybe'"),
        ({"DEMO_BOT_INTERVAL": "0"}, "DEMO_BOT_INTERVAL must be a number of seconds above 0, got '0'"),
        ({"DEMO_BOT_INTERVAL": "nan"}, "DEMO_BOT_INTERVAL must be a number of seconds above 0, got 'nan'"),
        ({"DEMO_EXPORTER": "jaeger"}, "DEMO_EXPORTER: must be one of zipkin, otlp, both (got 'jaeger')"),
    ],
)
def test_a_bad_variable_is_named_in_one_line(environ: dict[str, str], message: str):
    with pytest.raises(DemoError) as raised:
        make_plan(environ, PYTHON)

    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_with_a_certificate_directory_a_second_gateway_serves_https_beside_the_first():
    plan = make_plan({"DEMO_HTTPS_PORT": "18443"}, PYTHON, tls_dir="/run/demo-tls")

    gateway, https = plan.stages[2]
    assert (gateway.name, https.name) == (GATEWAY, GATEWAY_HTTPS)
    assert https.args == gateway.args
    assert https.ready_url == "http://127.0.0.1:9902/ready"
    assert {key: https.env[key] for key in https.env if key.startswith("GATEWAY_")} == {
        **{key: gateway.env[key] for key in gateway.env if key.startswith("GATEWAY_")},
        "GATEWAY_PORT": "18443",
        "GATEWAY_ADMIN_PORT": "9902",
        "GATEWAY_TLS_CERT_FILE": "/run/demo-tls/tls.crt",
        "GATEWAY_TLS_KEY_FILE": "/run/demo-tls/tls.key",
    }
    text = banner(plan)
    assert "https://localhost:18443/" in text
    assert "--cacert /run/demo-tls/ca.crt" in text
    assert "https://" not in banner(make_plan({}, PYTHON))


def test_the_https_port_is_checked_like_the_others():
    with pytest.raises(DemoError, match="DEMO_HTTPS_PORT is 8080, already the gateway's port"):
        make_plan({"DEMO_HTTPS_PORT": "8080"}, PYTHON, tls_dir="/x")
