"""`python -m gateway_devtools.mesh web|emoji|voting|bot`: one demo service (or the vote-bot) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import uvicorn

from gateway_devtools.mesh import votebot
from gateway_devtools.mesh.app import SERVICES, ServiceConfig, create_app
from gateway_devtools.mesh.reporting import DEFAULT_FLUSH_INTERVAL
from gateway_devtools.mesh.tracing import Misbehaviour
from gateway_devtools.serving import exit_cleanly_on_stop_signals, listen

BOT = "bot"
EMOJI_GRPC = "emoji-grpc"
MISBEHAVE_ENV = "MESH_MISBEHAVE"
EXIT_BAD_ARGUMENTS = 2
EXIT_CANNOT_LISTEN = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    exit_cleanly_on_stop_signals()
    if args.command == BOT:
        votebot.run(args.target, args.interval, args.rounds, log=lambda line: print(line, flush=True))
        return 0
    if args.command == EMOJI_GRPC:
        # grpcio is imported only here: the HTTP services run without it.
        from gateway_devtools.mesh.grpc_serving import serve_emoji_grpc

        return serve_emoji_grpc(args.host, args.port, args.zipkin_url, args.misbehave, args.sample_rate)
    return _serve(parser, args)


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = ServiceConfig(
        service=args.command,
        host=args.host,
        port=args.port,
        zipkin_url=args.zipkin_url,
        emoji_url=args.emoji_url,
        voting_url=args.voting_url,
        trace_page_url=args.trace_page_url,
        misbehaviour=args.misbehave,
        sample_rate=args.sample_rate,
        flush_interval=args.flush_interval,
    )
    try:
        app = create_app(config)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(f"{args.command}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    misbehaving = "" if args.misbehave is Misbehaviour.NONE else f", misbehaving: {args.misbehave}"
    reporting = f"reporting to {args.zipkin_url}" if args.zipkin_url else "not reporting spans"
    print(f"{args.command} listening on http://{args.host}:{args.port} ({reporting}{misbehaving})", flush=True)
    uvicorn_config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log, lifespan="on")
    uvicorn.Server(uvicorn_config).run(sockets=[sock])
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway_devtools.mesh",
        description="The demo mesh (web -> emoji, web -> voting), traced with B3 and Zipkin, and its vote-bot.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{web,emoji,voting,emoji-grpc,bot}")
    for service in SERVICES:
        _add_service_options(commands.add_parser(service, help=f"run the {service} service"))
    _add_service_options(commands.add_parser(EMOJI_GRPC, help="run emojivoto's EmojiService over gRPC (h2c)"))
    bot = commands.add_parser(BOT, help="send emojivoto's vote-bot traffic to web (through the gateway)")
    bot.add_argument("--target", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    bot.add_argument("--interval", type=float, default=1.0, help="seconds between rounds (default: %(default)s)")
    bot.add_argument("--rounds", type=int, default=None, help="stop after this many rounds (default: never)")
    return parser


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--zipkin-url", default="", help="Zipkin v2 span endpoint; empty: report nothing")
    parser.add_argument("--emoji-url", default="", help="base URL of the emoji service (web only)")
    parser.add_argument("--voting-url", default="", help="base URL of the voting service (web only)")
    parser.add_argument("--trace-page-url", default="", help="the collector's trace page, linked from web's page")
    parser.add_argument(
        "--misbehave",
        type=_misbehaviour,
        # argparse passes a string default through `type` too, so a bad $MESH_MISBEHAVE is a usage error.
        default=os.environ.get(MISBEHAVE_ENV) or Misbehaviour.NONE.value,
        metavar="{" + ",".join(Misbehaviour) + "}",
        help=f"break one tracing rule on purpose (default: ${MISBEHAVE_ENV}, else none)",
    )
    parser.add_argument(
        "--sample-rate",
        type=float,
        default=1.0,
        help="the service's own decision, for requests without one (default: %(default)s)",
    )
    parser.add_argument(
        "--flush-interval", type=float, default=DEFAULT_FLUSH_INTERVAL, help="seconds between span batches"
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")


def _misbehaviour(text: str) -> Misbehaviour:
    try:
        return Misbehaviour(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(Misbehaviour)}") from None
