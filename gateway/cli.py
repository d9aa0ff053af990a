"""The command line: `ingress-gateway [serve]`, `ingress-gateway check`, `--help` and `--version`.

The help lists every setting from the `Settings` fields themselves (name, description, default), so it cannot
drift from what the gateway reads.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from gateway.check import shown_value
from gateway.settings import Settings, env_name

PROG = "ingress-gateway"
DISTRIBUTION = "ingress-gateway"
EXIT_OK = 0
EXIT_PROBLEMS = 2
# The longest variable (GATEWAY_WEBSOCKET_MAX_MESSAGE_BYTES) and two spaces: a name must stand apart from its text.
_NAME_WIDTH = 37


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Edge gateway for a service mesh: samples once at the edge, propagates B3 and W3C trace "
        "context, reports spans. Configured by GATEWAY_* environment variables (also read from ./.env).",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="{serve,check}")
    commands.add_parser("serve", help="serve (the default when no command is given)")
    checking = commands.add_parser(
        "check",
        help="validate the settings and the route file as serving would; print the effective configuration "
        "(secrets masked) and exit 0, or every problem and exit 2",
    )
    checking.add_argument(
        "--strict", action="store_true", help="treat warnings (unknown GATEWAY_ variables, no exporter) as problems"
    )
    checking.add_argument("--quiet", action="store_true", help="print problems and warnings only")
    return parser


def settings_help() -> str:
    lines = ["settings (environment variables):"]
    for name, info in Settings.model_fields.items():
        default = shown_value(name, info.get_default(call_default_factory=True)) or "empty"
        # "(default: x)" stays on one line, so that a reader (or grep) finds it whole.
        text = f"{info.description} (default:\0{default})"
        wrapped = [line.replace("\0", " ") for line in textwrap.wrap(text, width=120 - _NAME_WIDTH - 2)] or [""]
        lines.append(f"  {env_name(name):<{_NAME_WIDTH}}{wrapped[0]}")
        lines.extend(f"  {'':<{_NAME_WIDTH}}{line}" for line in wrapped[1:])
    return "\n".join(lines)


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from gateway import __version__

        return __version__


def run_check(strict: bool, quiet: bool) -> int:
    """`ingress-gateway check`: the configuration on stdout, problems and warnings on stderr; 0 or 2."""
    from gateway.check import check, effective_configuration

    report = check()
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    problems = [*report.problems, *(report.warnings if strict else [])]
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if problems or report.settings is None:
        print(f"{PROG}: configuration check failed: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_PROBLEMS
    if not quiet:
        for line in effective_configuration(report.settings):
            print(line)
    print(f"{PROG}: configuration check passed", file=sys.stderr)
    return EXIT_OK
