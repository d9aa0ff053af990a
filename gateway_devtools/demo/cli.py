"""The demo's command: a throwaway certificate for its HTTPS gateway, the plan the environment asks for, the
supervisor; one line and exit status 2 when the environment is wrong."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from gateway_devtools.demo.environment import DemoError, check_ports_free
from gateway_devtools.demo.plan import make_plan
from gateway_devtools.demo.supervisor import Supervisor
from gateway_devtools.demo.tls import write_demo_certificate

EXIT_BAD_ENVIRONMENT = 2


def main() -> int:
    tls_dir = tempfile.mkdtemp(prefix="ingress-gateway-demo-tls-")
    try:
        write_demo_certificate(Path(tls_dir))
        try:
            plan = make_plan(os.environ, tls_dir=tls_dir)
            check_ports_free(plan.ports)
        except DemoError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return EXIT_BAD_ENVIRONMENT
        return Supervisor(plan, sys.stdout).run()
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)
