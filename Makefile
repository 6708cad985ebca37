# The two commands of the README: `make drill` (the main job) and `make test` (restoredrill's own tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: drill test lint smoke kind-smoke setup report

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

# restoredrill's own tests: lint and types, then the tests of the suite itself (the local-cluster,
# platform and drill-fault ones included), then a smoke of the user-facing drills on the local
# cluster (one app's namespace drill and the full-cluster recovery of two apps). The toolchain step
# installs the pinned Debian packages and builds the pinned binaries first (about 10 minutes for the
# cluster's on 2 cores the first time, a second once cached); the platform's binaries and images are
# built by its fixtures on first use (about 20 minutes more when cold).
test: setup lint
	$(BIN)/restoredrill schemas
	$(BIN)/restoredrill toolchain
	$(BIN)/restoredrill toolchain --no-apt --only actionlint kopia
	$(BIN)/pytest tests $(PYTEST_ARGS)
	$(MAKE) --no-print-directory smoke
	@if [ "$(KIND)" = 0 ]; then echo "[test] KIND=0: the kind tests (make kind-smoke) were NOT run"; \
	  else $(MAKE) --no-print-directory kind-smoke; fi

lint: setup
	$(BIN)/ruff check restoredrill fixtures suites tests bench
	$(BIN)/mypy

# The kind provider on a real Docker engine: the platform tests on kind, one cluster per xdist
# worker (-n 2). Needs a running Docker engine (kind's own requirement). With no node image chosen,
# kind's own is used when Docker has it or can pull it; where Docker cannot reach a registry, the
# node image is assembled here (as --kind-image local does) and the run says so; every image is
# then built here. `make test KIND=0` leaves this out, and says so.
KIND ?= 1
# Then the nightly workflow's own steps, in order, as its workflow_dispatch with selection=pelican
# and two workers runs them (.ci/machine/run-nightly-workflow says which steps need GitHub and are
# not run, and which one is replaced here). Then --keep-cluster for real: one kind cluster made by a
# session with no node image chosen, reused by the next, refused (untouched) when another node
# image is asked for, when not marked kept, and when not ours.
kind-smoke: setup
	$(BIN)/pytest tests/platform/test_platform_cluster.py --cluster-provider kind -n 2 \
	  --reports-dir reports/kind -p no:cacheprovider
	$(BIN)/python .ci/machine/run-nightly-workflow --selection pelican --workers 2
	$(BIN)/pytest tests/cluster/test_kind_keep_reuse.py --cluster-provider kind \
	  --reports-dir reports/kind-keep -p no:cacheprovider

# The user-facing drills as `make drill` runs them, on a fresh local cluster, cut to what fits CI.
SMOKE_APPS ?= pelican gatus
smoke: setup
	$(BIN)/pytest suites/drills -k "test_namespace_restore and pelican or test_full_cluster_recovery" \
	  --full-cluster-apps "$(SMOKE_APPS)" --reports-dir reports/smoke -p no:cacheprovider
