"""`python -m fuzz.run [--seconds N] [TARGET ...]`: coverage-guided fuzzing of every parser with atheris.

Each target runs in a process of its own for N seconds, from the seeds in targets.py plus the corpus it built on
earlier runs (build/fuzz/corpus/TARGET). A failure leaves the input that caused it in build/fuzz/crashes, and the
run exits 1 naming it: replay it with `python -m fuzz.run --replay FILE TARGET`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from fuzz.targets import SEEDS, TARGETS

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "fuzz"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.targets or sorted(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        print(f"unknown targets: {', '.join(unknown)} (known: {', '.join(sorted(TARGETS))})", file=sys.stderr)
        return 2
    if args.replay is not None:
        TARGETS[names[0]](args.replay.read_bytes())
        print(f"{names[0]}: {args.replay} passes")
        return 0
    failed = []
    for name in names:
        corpus = WORK / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        for index, seed in enumerate(SEEDS.get(name, [])):
            (corpus / f"seed-{index}").write_bytes(seed)
        crashes = WORK / "crashes"
        crashes.mkdir(parents=True, exist_ok=True)
        print(f"fuzzing {name} for {args.seconds} s", flush=True)
        command = [
            sys.executable,
            "-m",
            "fuzz.atheris_main",
            name,
            f"-max_total_time={args.seconds}",
            f"-artifact_prefix={crashes}/{name}-",
            "-print_final_stats=1",
            str(corpus),
        ]
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            failed.append(name)
    if failed:
        print(f"fuzzing found failures in: {', '.join(failed)} (inputs in {WORK / 'crashes'})", file=sys.stderr)
        return 1
    print(f"no failures in {len(names)} targets")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="targets to run (default: all)")
    parser.add_argument("--seconds", type=int, default=60, help="seconds per target (default: %(default)s)")
    parser.add_argument("--replay", type=Path, help="run one input file through the (first) target and stop")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
