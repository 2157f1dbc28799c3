# Two commands do all the set-up on a fresh machine:
#   make demo   - replicate examples/chinook.sqlite into an embedded local Postgres, live
#   make test   - run the test suite (pytest) against a real embedded Postgres
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= $(shell for p in python3.13 python3.12 "$$HOME/.pyenv/versions/3.12.1/bin/python" python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
DEMO_DIR ?= .demo
PYTEST_ARGS ?=

.PHONY: venv demo test lint clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python >= 3.12 (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

# Every `make demo` is a fresh rehearsal: a new copy of the file and its own embedded database,
# dropped first if an earlier demo left one (cut over or not).
demo: venv
	@mkdir -p $(DEMO_DIR)
	@$(VENV)/bin/replicator embedded drop --source $(DEMO_DIR)/chinook.sqlite
	@rm -rf $(DEMO_DIR)/chinook.sqlite* $(DEMO_DIR)/chinook.sqlite.replicator
	cp examples/chinook.sqlite $(DEMO_DIR)/chinook.sqlite
	$(VENV)/bin/replicator run --source $(DEMO_DIR)/chinook.sqlite

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check replicator tests

clean:
	-@test -x $(VENV)/bin/replicator && $(VENV)/bin/replicator embedded drop --source $(DEMO_DIR)/chinook.sqlite
	rm -rf $(VENV) $(DEMO_DIR)
