# Parley: `make run` starts the product on embedded defaults; `make test` installs what the
# tests need (system packages included) and runs them. See README.md.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends
# Debian packages the tests use for real: redis-server (Redis channel layer), chromium
# (browser tests, driven by Playwright with executable_path), espeak-ng and sox (speech),
# nginx and coturn (deploy/'s nginx site over TLS before two daphne processes, and its coturn
# settings, tested as shipped).

# axe-core, injected into pages by the accessibility browser tests, from the npm registry.
AXE := tests/js/node_modules/axe-core/axe.min.js

.PHONY: run test install install-dev system-deps test-system-deps lint bench clean

# The embedded demo: without SECRET_KEY, PARLEY_DEMO=1 has Parley generate one and keep it in
# var/secret_key ($PARLEY_DATA_DIR/secret_key, mode 0600). Deployments set SECRET_KEY.
run: export PARLEY_DEMO = 1
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/daphne -b $(HOST) -p $(PORT) project.asgi:application

test: test-system-deps install-dev $(AXE)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .

bench: test-system-deps install-dev
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/chat_fanout.py
	$(BIN)/python bench/asgi_servers.py
	$(BIN)/python bench/p2p_setup.py
	$(BIN)/python bench/p2p_setup.py --redis
	$(BIN)/python bench/sfu_forwarding.py
	$(BIN)/python bench/transcription.py
	$(BIN)/python bench/transcription.py --engine openai
	$(BIN)/python bench/hardening.py

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# A fresh Debian has python3 without venv/ensurepip: install python3-venv when missing.
system-deps:
	@$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || { \
		$(SUDO) apt-get update && $(APT_INSTALL) python3-venv python3-dev; }

test-system-deps: system-deps
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v sox >/dev/null || missing="$$missing sox"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v turnserver >/dev/null || missing="$$missing coturn"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update && $(APT_INSTALL) $$missing; \
	fi

$(BIN)/python: | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed

$(AXE): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --silent
	touch $@

clean:
	rm -rf $(VENV) var .pytest_cache tests/js/node_modules
