"""`python -m fuzz.atheris_main TARGET [libFuzzer flags] [CORPUS]`: one target under atheris (see fuzz/run.py)."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["gateway"]):
    from fuzz.targets import TARGETS


def main() -> None:
    name, flags = sys.argv[1], sys.argv[2:]
    atheris.Setup([sys.argv[0], *flags], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
