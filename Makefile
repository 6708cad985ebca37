# The two commands of the README: `make drill` (the main job) and `make test` (restoredrill's own tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: drill test setup report

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "[setup] creating $(VENV) and installing restoredrill with its test tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The main job: every suite on the GitOps repo (default: the bundled example): the static
# backup-policy checks, then the restore drills on the default local cluster (namespace drills of
# every app, CNPG options B and C, full-cluster recovery), then the HTML report. The pytest exit
# status is kept, so a failing check or drill fails the job.
drill: setup
	$(BIN)/restoredrill schemas
	$(BIN)/restoredrill toolchain
	$(BIN)/pytest suites $(PYTEST_ARGS); status=$$?; \
	  $(BIN)/restoredrill report; exit $$status

report: setup
	$(BIN)/restoredrill report

# restoredrill's own tests, the local-cluster and platform ones included: the toolchain step installs
# the pinned Debian packages and builds the pinned binaries first (the cluster's take about 30 minutes
# on 2 cores the first time, a second once cached); the platform's binaries and images are built by
# its fixtures on first use.
test: setup
	$(BIN)/restoredrill schemas
	$(BIN)/restoredrill toolchain
	$(BIN)/restoredrill toolchain --no-apt --only actionlint
	$(BIN)/pytest tests $(PYTEST_ARGS)
