# The two commands a newcomer runs: `make run` (gateway + embedded demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit bench bench-instructions bench-protocols loadtest soak fuzz image-test clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || tools/ensure-debian-packages.sh python3-venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,dev-tools]'
	@touch $@

run: $(STAMP)
	$(PY) -m gateway_devtools.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) lint typecheck
	tools/ensure-debian-packages.sh chromium:chromium curl:curl
	$(VENV)/bin/pytest -q

# HTTP/1.1 against the Python ceiling and nginx, on one core and on every core (bench/run.py), then every other
# protocol beside nginx (bench/protocols.py); the exit status is bench/run.py's checks' unless the second fails.
bench: $(STAMP)
	tools/ensure-debian-packages.sh nginx:nginx wrk:wrk taskset:util-linux h2load:nghttp2-client
	$(PY) bench/run.py; status=$$?; $(PY) bench/protocols.py || exit $$?; exit $$status

# The gateway beside nginx on HTTP/2 (h2c, TLS), TLS HTTP/1.1, unary gRPC and WebSocket (bench/protocols.py); rows
# whose protocol the gateway does not speak yet say so and measure nginx alone.
bench-protocols: $(STAMP)
	tools/ensure-debian-packages.sh nginx:nginx wrk:wrk taskset:util-linux h2load:nghttp2-client
	$(PY) bench/protocols.py $(PROTOCOLS_ARGS)

# deploy/'s images built for real with podman on a Debian base made by mmdebstrap, checked against the manifests and
# run as they run them (tests/deploy/test_image_run.py). Minutes of building, so not in `make test`; .ci/run runs it.
image-test: $(STAMP)
	tools/ensure-debian-packages.sh podman:podman runc:runc mmdebstrap:mmdebstrap openssl:openssl
	INGRESS_GATEWAY_IMAGE_TEST=1 $(VENV)/bin/pytest -q tests/deploy/test_image_run.py

# Tracing's cost in instructions per request under callgrind: the figure this machine's noise cannot move
# (bench/instructions.py). make bench-instructions INSTRUCTIONS_ARGS="--keep /tmp/cg" lists where they go.
bench-instructions: $(STAMP)
	tools/ensure-debian-packages.sh nginx:nginx wrk:wrk taskset:util-linux valgrind:valgrind
	$(PY) bench/instructions.py $(INSTRUCTIONS_ARGS)

# Locust against the demo stack, which it starts and stops; proves every trace whole or absent (loadtest/README.md).
# More load or locust options: make loadtest LOADTEST_ARGS="-u 50 -t 1m --misbehave voting=drop-spans -- --csv x"
loadtest: $(STAMP)
	$(PY) -m loadtest.demo $(LOADTEST_ARGS)

# Load against a flapping collector; fails when RSS, descriptors or tasks grow past their bounds or a span goes
# unaccounted for (tools/soak.py --help). Not part of `make test`: make soak SOAK_MINUTES=30 SOAK_ARGS="--rate 300"
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(PY) tools/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

# Coverage-guided fuzzing (atheris) of every parser, FUZZ_SECONDS per target; make fuzz FUZZ_TARGETS="b3_single"
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,fuzz]'
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .hypothesis gateway/*.so
