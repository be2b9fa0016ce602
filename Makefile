# Defect Inspector. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench soak install mosquitto clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/inspector demo

# Tests need a real Mosquitto. Install it when missing and we may (root, apt).
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq mosquitto >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq mosquitto)) ; \
	  else echo "tests need mosquitto: sudo apt-get install -y mosquitto" >&2; exit 1; fi; }

test: $(STAMP) mosquitto
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check inspector calibration tests deploy
	$(VENV)/bin/ruff format --check inspector calibration tests deploy

# 10,000 parts through simulator, inspector and gate (not part of make test): scorecard + RSS.
SOAK_DIR ?= /tmp/inspector-soak
soak: $(STAMP) mosquitto
	$(VENV)/bin/inspector demo --prepare $(SOAK_DIR) --parts 200
	$(VENV)/bin/inspector simulate --data $(SOAK_DIR)/parts --model $(SOAK_DIR)/model/contrast-demo.onnx \
	  --parts 10000 --rate 3000 --out soak-scorecard.json

bench: $(STAMP) mosquitto
	$(VENV)/bin/inspector bench --out bench.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
