# The two set-up commands: `make run` serves the API on embedded defaults,
# `make test` runs the test suite. Both create the virtualenv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test venv clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(BIN)/.installed

# The demo runs on the public development key with DEBUG off; it says so explicitly,
# since the service otherwise refuses to start on that key (core.E001).
run: export SYMPHAINY_INSECURE_DEV_KEY ?= 1
run: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py seed_demo --base-url http://$(HOST):$(PORT)
	$(BIN)/python -m symphainy.serve -b $(HOST) -p $(PORT) --websocket-max-message-size 131072

test: venv
	$(BIN)/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) var db.sqlite3* staticfiles
