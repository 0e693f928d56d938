# Two entry points, both self-installing on a fresh machine:
#   make demo   - the main job on the embedded demo corpus
#   make test   - the test suite (what .ci/run runs)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DEMO_OUT ?= demo-run

.PHONY: demo test install browser clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,test]'
	touch $@

demo: install
	$(BIN)/recipekit demo --out $(DEMO_OUT)

test: install browser
	$(BIN)/python -m pytest -q

# The headless browser of tests/test_serve_page.py (Debian's chromium + chromedriver). Idempotent: does
# nothing when both are on PATH; installs them when run as root with apt-get; else says the browser
# test will skip (and fail under CI=true).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium + chromium-driver for the browser test (apt-get)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; } || echo "warning: could not install chromium; the browser test will not run"; \
	else echo "note: chromium/chromedriver missing (install them as root: make browser); the browser test skips, or fails under CI=true"; fi

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info
