# The two set-up commands: `make run` serves the API on embedded defaults,
# `make test` runs the test suite. Both create the virtualenv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test venv examples manage clean

# `make run` installs the runtime only; `make test` adds the test tools.
$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The examples' own packages (a WebSocket client), on top of the runtime.
$(BIN)/.installed-examples: $(BIN)/.installed examples/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r examples/requirements.txt
	touch $@

venv: $(BIN)/.installed

examples: $(BIN)/.installed-examples

# The demo runs on the public development key with DEBUG off; it says so explicitly,
# since the service otherwise refuses to start on that key (core.E001).
run: export SYMPHAINY_INSECURE_DEV_KEY ?= 1
# A reload of the console keeps its session (the refresh cookie, docs/security.md): what
# someone trying the demo expects. Browsers keep that Secure cookie on loopback over plain
# HTTP; on another host without TLS the console goes without it (docs/client.md).
run: export AUTH_REFRESH_COOKIE ?= 1
run: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	@# The demo user only on the embedded SQLite, or when asked for (SEED_DEMO=1).
	@if [ -z "$$DATABASE_URL" ] || [ "$$SEED_DEMO" = "1" ]; then \
	  $(BIN)/python manage.py seed_demo --base-url http://$(HOST):$(PORT); \
	else echo "DATABASE_URL is set: no demo seed (SEED_DEMO=1 to seed)"; fi
	$(BIN)/python -m symphainy.serve -b $(HOST) -p $(PORT) --websocket-max-message-size 131072

# Operator commands against the local run (`make manage ARGS="sessions list"`): its database,
# and its development key allowed as `make run` allows it. A server's commands run with the
# service's own environment instead (docs/operations.md).
manage: export SYMPHAINY_INSECURE_DEV_KEY ?= 1
manage: venv
	$(BIN)/python manage.py $(ARGS)

test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) var db.sqlite3* staticfiles
