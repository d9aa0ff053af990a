"""The benchmark's pure parts: wrk's report, /proc parsing, figures, checks, configs. Run: pytest bench/"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from figures import (
    FAIL,
    NOT_AVAILABLE,
    PAIRED,
    PASS,
    WARMUP,
    Check,
    ProcessMemory,
    Run,
    cpu_ratio,
    every_core_text,
    memory_over,
    paired_ratio,
    ratio,
    summarise,
    target_checks,
    validity_checks,
)
from h2load import H2loadError
from h2load import command as h2load_command
from h2load import parse as h2load_parse
from plan import (
    BODIES,
    CEILING,
    GATEWAY_2_WORKERS,
    GATEWAY_RATE_0,
    GATEWAY_RATE_1,
    NGINX_2_WORKERS,
    TARGETS,
    UPSTREAM,
)
from procfs import CpuTicks, busy_percent, parse_cpu_ticks, parse_stat
from protocol_targets import ProxyPorts, grpc_responder_config, write_certificates, write_grpc_files
from protocol_targets import proxy_config as protocol_proxy_config
from report import table
from services import free_port, start
from span_sink import CHECK_EVERY, SpanSink
from targets import gateway_defaults, gateway_env, proxy_config, upstream_config
from wrk import WrkError, WrkResult, parse
from ws_load import load as ws_load

REPORT = """\
Running 10s test @ http://127.0.0.1:8080/small
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  12.34ms   90.00%
    Req/Sec    26.12k     1.23k   28.00k    80.00%
  Latency Distribution
     50%  950.00us
     75%    1.30ms
     90%    1.60ms
     99%    1.02s
  260012 requests in 10.00s, 40.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 5
Requests/sec:  26001.20
Transfer/sec:      4.00MB
"""
MB = 2**20


def test_parse_reads_every_figure_in_milliseconds() -> None:
    result = parse(REPORT)
    assert (result.requests, result.seconds, result.requests_per_second) == (260012, 10.0, 26001.2)
    assert result.latency_ms == pytest.approx({"50": 0.95, "75": 1.3, "90": 1.6, "99": 1020.0})
    assert result.bad_status == 5
    assert result.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 7}
    assert not result.clean


def test_parse_counts_missing_error_lines_as_zero() -> None:
    clean = "\n".join(line for line in REPORT.splitlines() if "errors" not in line and "Non-2xx" not in line)
    result = parse(clean)
    assert (result.bad_status, sum(result.socket_errors.values()), result.clean) == (0, 0, True)


def test_parse_rejects_a_report_without_latency_distribution() -> None:
    with pytest.raises(WrkError):
        parse(REPORT.replace("     99%    1.02s\n", ""))


def test_parse_stat_handles_names_with_spaces_and_parentheses() -> None:
    fields = " ".join(str(n) for n in range(4, 53))  # after the state (field 3), field k holds k
    stat = parse_stat(f"4242 (nginx: (worker) x) S {fields}")
    assert (stat.pid, stat.name, stat.ppid) == (4242, "nginx: (worker) x", 4)
    assert stat.cpu_ticks == 14 + 15 + 16 + 17  # utime, stime, cutime, cstime
    assert stat.start_ticks == 22


def test_parse_cpu_ticks_separates_idle_and_interrupts() -> None:
    text = "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 1 5 80 4 2 3 0 0 0\ncpu1 1 0 1 98 0 0 0 0 0 0\nintr 1 2\n"
    ticks = parse_cpu_ticks(text)
    assert ticks == {0: CpuTicks(busy=21, interrupts=5, total=105), 1: CpuTicks(busy=2, interrupts=0, total=100)}
    later = {0: CpuTicks(busy=71, interrupts=5, total=205), 1: CpuTicks(busy=2, interrupts=0, total=100)}
    assert busy_percent(ticks, later) == {0: 50.0, 1: 0.0}


def _run(target: str, rps: float, round_: int = 0, body: str = "small", **changes: object) -> Run:
    fields: dict[str, object] = {
        "target": target,
        "body": body,
        "round": round_,
        "wrk": WrkResult(int(rps * 10), 10.0, rps, {"50": 1.0, "75": 2.0, "90": 3.0, "99": 100.0 / rps}, 0, {}),
        "wrk_report": "",
        "cpu_seconds": rps * 10 * 1e-4,
        "memory": (ProcessMemory(1, "p", 50 * MB, 60 * MB, 51 * MB),),
        "busy_percent": {0: 50.0, 1: 100.0},
        "load_busy_percent": 50.0,
        "proxy_busy_percent": 100.0,
        "other_busy_percent": 1.0,
        "spans": None,
        "alive": True,
    }
    fields.update(changes)
    return Run(**fields)  # type: ignore[arg-type]


def test_ratio_pairs_runs_of_the_same_round_and_ignores_warmup() -> None:
    runs = [
        _run(CEILING, 100, WARMUP),
        _run(GATEWAY_RATE_1, 9999, WARMUP),
        _run(CEILING, 100, 0),
        _run(GATEWAY_RATE_1, 700, 0),
        _run(CEILING, 50, 1),
        _run(GATEWAY_RATE_1, 400, 1),
        _run(GATEWAY_RATE_1, 1000, 2),  # no ceiling run in round 2: no ratio
    ]
    found = ratio(runs, GATEWAY_RATE_1, CEILING, "small")
    assert found is not None
    assert (found.median, found.low, found.high) == (7.5, 7.0, 8.0)
    assert ratio(runs, GATEWAY_RATE_1, CEILING, "16k") is None


def test_cpu_ratio_is_how_many_times_less_cpu_per_request() -> None:
    runs = [_run(CEILING, 100, cpu_seconds=1.0), _run(GATEWAY_RATE_1, 50, cpu_seconds=0.1)]  # 1000 and 200 us
    found = cpu_ratio(runs, GATEWAY_RATE_1, CEILING, "small")
    assert found is not None and found.median == pytest.approx(5.0)


def test_summary_takes_medians_over_measured_rounds() -> None:
    runs = [_run(CEILING, rps, round_) for round_, rps in enumerate((100, 300, 200))] + [_run(CEILING, 1, WARMUP)]
    summary = summarise(runs)[(CEILING, "small")]
    assert summary.rounds == 3
    assert (summary.requests_per_second.median, summary.requests_per_second.low) == (200, 100)
    assert summary.cpu_us_per_request.median == pytest.approx(100.0)


def test_memory_over_keeps_first_start_highest_peak_and_last_end() -> None:
    runs = [
        _run(CEILING, 1, 0, memory=(ProcessMemory(7, "w", 10, 30, 12),)),
        _run(CEILING, 1, 1, memory=(ProcessMemory(7, "w", 12, 20, 14), ProcessMemory(8, "v", 5, 5, 5))),
    ]
    assert memory_over(runs) == (ProcessMemory(7, "w", 10, 30, 14), ProcessMemory(8, "v", 5, 5, 5))


def _statuses(checks: list[Check], word: str) -> list[str]:
    return [check.status for check in checks if word in check.name]


def test_target_checks_pass_and_fail_on_the_issue_thresholds() -> None:
    runs = [_run(CEILING, 1000), _run(GATEWAY_RATE_0, 1000), _run(GATEWAY_RATE_1, 900)]
    checks = target_checks(runs, ["small"], [GATEWAY_RATE_0, GATEWAY_RATE_1])
    assert _statuses(checks, "0.8x ceiling") == [PASS]  # 0.9x the ceiling
    assert _statuses(checks, "0.9x gateway-0.0") == [PASS]  # 900/1000
    assert _statuses(checks, "p99") == [PASS]  # 0.111 ms <= 2 x 0.1 ms
    slower = [_run(CEILING, 1000), _run(GATEWAY_RATE_0, 1000), _run(GATEWAY_RATE_1, 790, wrk=_slow_p99(790))]
    checks = target_checks(slower, ["small"], [GATEWAY_RATE_0, GATEWAY_RATE_1])
    assert _statuses(checks, "0.8x ceiling") == [FAIL]
    assert _statuses(checks, "0.9x gateway-0.0") == [FAIL]
    assert _statuses(checks, "p99") == [FAIL]


def _slow_p99(rps: float) -> WrkResult:
    return WrkResult(int(rps * 10), 10.0, rps, {"50": 1.0, "75": 2.0, "90": 3.0, "99": 0.21}, 0, {})


def test_every_core_rows_are_read_against_nginx_on_as_many_cores_by_cpu_per_request() -> None:
    runs = [_run(NGINX_2_WORKERS, 4000, cpu_seconds=1.0), _run(GATEWAY_2_WORKERS, 1000, cpu_seconds=2.0)]
    text = every_core_text(runs, ["small", "16k"])
    assert "[small] CPU per request: gateway 200 us, nginx 25 us (8.0x); req/s 0.25x of nginx's" in text
    assert "[16k] not measured" in text


def test_paired_runs_make_their_own_ratio_and_stay_out_of_the_rounds_figures() -> None:
    rounds = [_run(GATEWAY_RATE_0, 1000, 0), _run(GATEWAY_RATE_1, 800, 0), _run(CEILING, 100, 0)]
    pairs = [
        _run(GATEWAY_RATE_0, 1000, PAIRED),
        _run(GATEWAY_RATE_1, 900, PAIRED),
        _run(GATEWAY_RATE_1, 3000, PAIRED + 1),  # B first in odd pairs
        _run(GATEWAY_RATE_0, 2000, PAIRED + 1),
        _run(GATEWAY_RATE_0, 10, PAIRED + 2),  # a pair cut short: no ratio
    ]
    runs = rounds + pairs
    found = paired_ratio(runs, "small")
    assert found is not None and (found.median, found.low, found.high) == (1.2, 0.9, 1.5)
    assert paired_ratio(rounds, "small") is None
    # The rounds' figures are the rounds' alone.
    rounds_ratio = ratio(runs, GATEWAY_RATE_1, GATEWAY_RATE_0, "small")
    assert rounds_ratio is not None and rounds_ratio.median == 0.8
    assert summarise(runs)[(GATEWAY_RATE_0, "small")].rounds == 1
    # Shown beside the rounds' ratio, which alone decides the check.
    [check] = [check for check in target_checks(runs, ["small"], []) if "0.9x" in check.name]
    assert check.status == FAIL
    assert "in alternating pairs of short runs 1.200x (0.900-1.500)" in check.detail


def test_target_checks_are_not_available_without_the_gateway() -> None:
    checks = target_checks([_run(CEILING, 100)], ["small"], [GATEWAY_RATE_1])
    assert {check.status for check in checks} == {NOT_AVAILABLE}


@pytest.mark.parametrize(
    ("start", "peak", "end", "limit", "back"),
    [
        (50 * MB, 60 * MB, 54 * MB, PASS, PASS),
        (50 * MB, 60 * MB, 56 * MB, PASS, FAIL),  # above 5 MB and 10 % growth
        (50 * MB, 100 * MB, 50 * MB, FAIL, PASS),
    ],
)
def test_rss_checks(start: int, peak: int, end: int, limit: str, back: str) -> None:
    runs = [_run(GATEWAY_RATE_1, 1, memory=(ProcessMemory(3, "gw", start, peak, end),))]
    checks = target_checks(runs, [], [GATEWAY_RATE_1])
    assert [check.status for check in checks] == [limit, back]


def test_validity_flags_errors_deaths_missing_spans_and_a_busy_machine() -> None:
    gateway_0, gateway_1 = (t for t in TARGETS if t.name in (GATEWAY_RATE_0, GATEWAY_RATE_1))
    good = [_run(GATEWAY_RATE_0, 100, spans=0), _run(GATEWAY_RATE_1, 100, spans=2000)]
    assert {check.status for check in validity_checks(good, [gateway_0, gateway_1])} == {PASS}
    bad_wrk = WrkResult(1000, 10.0, 100.0, {"50": 1.0, "75": 1.0, "90": 1.0, "99": 1.0}, 3, {"read": 0})
    bad = [
        _run(GATEWAY_RATE_0, 100, spans=4, wrk=bad_wrk, other_busy_percent=30.0),
        _run(GATEWAY_RATE_1, 100, spans=1900, alive=False, other_busy_percent=30.0),
    ]
    assert {check.status for check in validity_checks(bad, [gateway_0, gateway_1])} == {FAIL}


def test_table_lists_unavailable_targets() -> None:
    text = table([_run(UPSTREAM, 1000), _run(CEILING, 100)], TARGETS, BODIES[0], {GATEWAY_RATE_1: "boom"})
    lines = text.splitlines()
    assert lines[0].startswith("target") and set(lines[1]) == {"-"}
    assert "10.00x" in lines[2] and "1.00x" in lines[3]
    assert "gateway, rate 1.0" in lines[4] and "not available" in lines[4]
    assert len(lines) == 5


def test_gateway_env_drops_inherited_gateway_settings() -> None:
    target = next(t for t in TARGETS if t.name == GATEWAY_RATE_1)
    env = gateway_env(
        {"PATH": "/bin", "GATEWAY_SAMPLE_RATE": "0.5", "GATEWAY_ROUTES_FILE": "x.yaml"},
        target,
        port=8080,
        upstream="http://127.0.0.1:1",
        sink="http://127.0.0.1:2",
        extra={"GATEWAY_PROPAGATION": "b3"},
    )
    assert env["PATH"] == "/bin" and "GATEWAY_ROUTES_FILE" not in env
    assert env["GATEWAY_SAMPLE_RATE"] == "1.0" and env["GATEWAY_WORKERS"] == "1"
    assert env["GATEWAY_ZIPKIN_URL"] == "http://127.0.0.1:2/api/v2/spans"
    assert env["GATEWAY_PROPAGATION"] == "b3"
    # What users run: the access log and the log level at their defaults.
    assert "GATEWAY_ACCESS_LOG" not in env and "GATEWAY_LOG_LEVEL" not in env


def test_the_gateway_defaults_are_read_from_settings() -> None:
    defaults = gateway_defaults()
    assert defaults["access_log"] is True
    assert defaults["log_level"] == "info"
    assert defaults["propagation"] == "b3multi"


def test_the_two_worker_nginx_has_two_workers() -> None:
    assert "worker_processes 2;" in proxy_config(Path("/tmp/p"), 1234, 5678, workers=2)
    assert "worker_processes 1;" in proxy_config(Path("/tmp/p"), 1234, 5678)


def test_nginx_configs_keep_everything_under_the_prefix() -> None:
    prefix = Path("/tmp/p")
    for config in (upstream_config(prefix, Path("/tmp/p/www"), 1234), proxy_config(prefix, 1234, 5678)):
        assert "daemon off;" in config and "worker_processes 1;" in config
        paths = [word.rstrip(";") for word in config.split() if word.startswith("/") and word != "/"]
        assert paths and all(path.startswith("/tmp/p") for path in paths)
    assert "server 127.0.0.1:1234;" in proxy_config(prefix, 1234, 5678)
    assert "keepalive 64;" in proxy_config(prefix, 1234, 5678)


GZIP = [(b"content-encoding", b"gzip")]


def _spans(count: int, tag: str = "") -> bytes:
    return json.dumps([{"traceId": f"{n:016x}", "id": "1", "tags": {"note": tag}} for n in range(count)]).encode()


def test_span_sink_parses_the_first_post_and_counts_keys_in_the_others() -> None:
    sink = SpanSink()
    bodies = [_spans(3, tag='a "traceId": inside a string') for _ in range(CHECK_EVERY + 1)]
    statuses = [sink._count(gzip.compress(body), GZIP) for body in bodies]
    assert statuses == [202] * (CHECK_EVERY + 1)
    assert sink.stats["spans"] == 3 * (CHECK_EVERY + 1)
    assert sink.stats["checked"] == 2  # the first and the (CHECK_EVERY + 1)th
    assert sink._count(_spans(2), []) == 202  # uncompressed is accepted too
    assert sink.stats["spans"] == 3 * (CHECK_EVERY + 1) + 2


@pytest.mark.parametrize("body", [b"{}", b"[1, 2]", b'[{"id": "1"}]', b"not json", b'{"traceId": 1}'])
def test_span_sink_rejects_a_checked_post_that_is_not_a_list_of_spans(body: bytes) -> None:
    sink = SpanSink()
    compressed = gzip.compress(body)
    assert sink._count(compressed, GZIP) == 400
    assert sink.stats == {"spans": 0, "posts": 1, "checked": 1, "rejected": 1, "bytes": len(compressed)}


def test_span_sink_rejects_a_body_that_says_gzip_and_is_not() -> None:
    sink = SpanSink()
    assert sink._count(_spans(1), GZIP) == 400
    assert sink.stats["rejected"] == 1


H2LOAD_REPORT = """\
finished in 1.01s, 10142.00 req/s, 1.41MB/s
requests: 10142 total, 10174 started, 10142 done, 10140 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 10137 2xx, 0 3xx, 0 4xx, 3 5xx
traffic: 1.41MB (1481124) total, 1.11MB (1166330) headers (space savings 34.29%), 128.76KB (131846) data
                     min         max         mean         sd        +/- sd
time for request:      238us     55.49ms      2.65ms      5.42ms    94.68%
time for connect:    10.19ms     21.23ms     17.73ms      4.33ms    75.00%
"""


def test_h2load_parse_counts_failures_and_error_statuses_apart_from_successes() -> None:
    result = h2load_parse(H2LOAD_REPORT)
    assert (result.requests, result.failed) == (10137, 5)
    assert (result.seconds, result.requests_per_second) == (1.01, 10142.0)
    assert (result.mean_ms, result.max_ms) == (2.65, 55.49)
    with pytest.raises(H2loadError):
        h2load_parse("no protocol negotiated\n")


def test_h2load_command_sends_grpc_bodies_and_headers() -> None:
    args = h2load_command(
        "http://127.0.0.1:1/x", cpus=[0], seconds=3, connections=8, streams=4, body=Path("b"), headers=["te: trailers"]
    )
    assert args[:3] == ["taskset", "--cpu-list", "0"]
    assert args[3:] == [
        "h2load",
        "-t1",
        "-c8",
        "-m4",
        "-D",
        "3",
        "-d",
        "b",
        "-H",
        "te: trailers",
        "http://127.0.0.1:1/x",
    ]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_the_protocol_nginx_configs_pass_nginx_t(tmp_path: Path) -> None:
    cert, key = write_certificates(tmp_path)
    root, _ = write_grpc_files(tmp_path)
    ports = ProxyPorts(1, 2, 3, 4)
    configs = {
        "proxy": protocol_proxy_config(tmp_path, ports, upstream=5, grpc_upstream=6, ws_upstream=7, cert=cert, key=key),
        "grpc": grpc_responder_config(tmp_path, root, 8),
    }
    for name, text in configs.items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text(text)
        done = subprocess.run(
            ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


def test_the_websocket_load_client_counts_echoed_messages(tmp_path: Path) -> None:
    stack = ExitStack()
    with stack:
        port = free_port()
        echo = [sys.executable, str(Path(__file__).with_name("ws_load.py")), "echo", str(port)]
        start(stack, "ws-echo", echo, cpus=sorted(os.sched_getaffinity(0)), port=port, log_dir=tmp_path)
        figures = asyncio.run(ws_load(f"ws://127.0.0.1:{port}/ws", connections=2, seconds=0.3, size=64))
    assert figures["messages"] > 0 and figures["failed"] == 0
    assert figures["p99_ms"] > 0
