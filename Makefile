# Quick start: `make demo` runs the whole pipeline offline; `make test` runs the style check (ruff) and the test suite.
# Both create .venv and install laionprep with the tested, pinned dependency set (constraints.txt) on first use;
# re-running is a no-op until pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.laionprep-installed
WORKDIR ?= demo-run
PYTEST_ARGS ?=

.PHONY: install demo test bench clean system-deps

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip 'setuptools>=77'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@$(MAKE) --no-print-directory system-deps
	@touch $@

# Debian packages some checks use (a headless browser for the HTML report test, GNU Unifont for CLIPPO's text
# rendering, the WordNet database for CLIPA's syntax-based text-token reduction).
# Installed only where we are root with apt-get; elsewhere the tests that need them say what is missing.
system-deps:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) || echo "warning: could not install$$missing"; fi; \
	fi

SYSTEM_PACKAGES ?= chromium unifont wordnet-base

demo: $(STAMP)
	$(BIN)/laionprep demo --workdir $(WORKDIR)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache
