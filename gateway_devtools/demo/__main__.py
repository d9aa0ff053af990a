"""`python -m gateway_devtools.demo`: demo/cli.py's main(), once the dev-tools extra is installed."""

from gateway_devtools.extra import run_if_installed

if __name__ == "__main__":
    raise SystemExit(run_if_installed("gateway_devtools.demo.cli"))
