# Defect Inspector. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Every install takes its versions from the lock (see its header; `make constraints` refreshes it).
CONSTRAINTS := constraints.txt

.PHONY: demo test test-deps screenshots lint bench bench-accuracy bench-small demo-model soak install mosquitto aravis clean constraints

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# Training (TensorFlow) on top: the tests, the accuracy benchmark and the demo model need it;
# `make demo` does not.
TRAIN_STAMP := $(VENV)/.installed-train
$(TRAIN_STAMP): $(STAMP)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev,train]'
	touch $(TRAIN_STAMP)

# The genicam source's binding (PyGObject builds against the distribution's GLib): the tests
# drive Aravis' fake cameras; `make demo` does not need it.
GENICAM_STAMP := $(VENV)/.installed-genicam
$(GENICAM_STAMP): $(STAMP) | aravis
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev,genicam]'
	touch $(GENICAM_STAMP)

# Refresh the lock: the newest versions setup.cfg allows, pinned as installed. Then `make test`.
constraints: $(PY)
	$(PIP) install --quiet --upgrade --upgrade-strategy eager -e '.[dev,train,genicam,pretrained-large]'
	$(PY) deploy/constraints.py --out $(CONSTRAINTS)
	touch $(STAMP) $(TRAIN_STAMP)

install: $(STAMP)

# The replay, then the line stays live with the QA workbench on it (DEMO_PORT) until Ctrl-C;
# `inspector demo` without --serve ends after the summary.
DEMO_PORT ?= 8470
demo: $(STAMP)
	$(VENV)/bin/inspector demo --parts 240 --rate 30 --serve $(DEMO_PORT)

# Tests need a real Mosquitto. Install it when missing and we may (root, apt).
# mosquitto-clients (mosquitto_sub) is the bench's light subscriber; the bench works without it.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq mosquitto mosquitto-clients >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients)) ; \
	  else echo "tests need mosquitto: sudo apt-get install -y mosquitto" >&2; exit 1; fi; }

# GenICam cameras: Aravis and its fake GigE Vision camera come from the distribution; PyGObject
# (in the dev and genicam extras) builds against libgirepository and cairo. Installed when
# missing and we may (root, apt), as mosquitto is.
ARAVIS_PACKAGES := gir1.2-aravis-0.8 aravis-tools python3-gi libgirepository1.0-dev libcairo2-dev
aravis:
	@command -v dpkg >/dev/null 2>&1 || exit 0; missing=""; \
	for p in $(ARAVIS_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	   (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing)); \
	else echo "the dev install builds PyGObject and the tests drive Aravis:" \
	  "sudo apt-get install -y$$missing" >&2; exit 1; fi

# The tests also drive PostgreSQL (the plant store of SPC and the review app) and Chromium with
# its driver (the review app's browser test) for real. Installed when missing and we may (root,
# apt); elsewhere the message says what to install (tests that need them skip without them).
APT_TEST_PACKAGES := mosquitto mosquitto-clients postgresql chromium chromium-driver $(ARAVIS_PACKAGES)
test-deps:
	@command -v dpkg >/dev/null 2>&1 || exit 0; missing=""; \
	for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "the tests want:$$missing (sudo apt-get install -y$$missing); they skip without" >&2; fi

# The suite runs in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them
# (its module fixtures, often a small trained model, are built once). Most of the suite waits
# on brokers, browsers and servers, so two workers on two cores take about half the time of
# one; TEST_WORKERS=1 runs it in one process.
TEST_WORKERS ?= 2
test: $(TRAIN_STAMP) $(GENICAM_STAMP) mosquitto test-deps
	$(PY) -m pytest -q -ra --durations=25 $(if $(filter 1,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile)

# The README's screenshots of the workbench, remade by the browser tests that walk its pages
# (the demo journey trains a small model: a few minutes).
screenshots: $(TRAIN_STAMP) mosquitto test-deps
	INSPECTOR_SCREENSHOTS=docs $(PY) -m pytest -q -k browser tests/test_review_browser.py tests/test_journey_demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check inspector calibration training tests deploy
	$(VENV)/bin/ruff format --check inspector calibration training tests deploy

# 10,000 parts through simulator, inspector and gate (not part of make test): scorecard + RSS.
SOAK_DIR ?= /tmp/inspector-soak
soak: $(STAMP) mosquitto
	$(VENV)/bin/inspector demo --prepare $(SOAK_DIR) --parts 200
	$(VENV)/bin/inspector simulate --data $(SOAK_DIR)/parts --model $(SOAK_DIR)/model/demo.onnx \
	  --parts 10000 --rate 3000 --out soak-scorecard.json

bench: $(STAMP) mosquitto
	@command -v mosquitto_sub >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get install -y -qq mosquitto-clients >/dev/null 2>&1; } || \
	  echo "no mosquitto_sub: the bench times verdicts with a Python subscriber (heavier)" >&2
	$(VENV)/bin/inspector bench --out bench.json

# ELPV accuracy benchmark: the default recipe (ImageNet EfficientNet-Lite0, fine-tuned), about
# an hour on 2 cores, with its FP16 and INT8 variants (JSON out). --model-type cnn: the earlier one.
bench-accuracy: $(TRAIN_STAMP)
	$(VENV)/bin/inspector bench accuracy --tta --out bench-accuracy.json --work /tmp/inspector-bench-accuracy

# The small three-class case (60 images each) a QA engineer tries first: a few minutes.
bench-small: $(TRAIN_STAMP)
	$(VENV)/bin/inspector bench small --out bench-small.json --work /tmp/inspector-bench-small

# Retrain the committed demo model (inspector/models/demo.onnx + demo.json) from synthetic parts.
demo-model: $(TRAIN_STAMP)
	$(PY) -m training.demo_model

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
