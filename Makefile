# detnas: set up, run the study, test, record results with DVC.
#   make run         the embedded study (synthetic data, CPU): `snakemake --profile profiles/local`
#   make test        system deps (slurm, munge, chromium, postgresql), a one-node SLURM cluster,
#                    ruff, snakemake --lint (scripts/ci/lint_workflow.py), all tests
#   make readme      after `make run`: README's results block from results/report/tables.json
#   make dvc-push    after a run: record results/ and logs/ with DVC, push to the default remote
#                    (set one first: docs/dvc-mlflow.md), then commit dvc.lock
#   make dvc-pull    in a clone: restore them as pushed; Snakemake then has nothing to do
#   make clean       remove results/, logs/, .snakemake/ (not the venv, not DVC's cache)
# Variables: PYTHON (for the venv), ARGS (extra snakemake arguments, e.g. --configfile ...),
# PYTEST_ARGS (default: every test that needs no GPU), PYTEST_WORKERS (default 2: the tests run
# one thread each, in pytest-xdist workers; 0 runs them in this process).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONPATH := $(CURDIR)
ARGS ?=
PYTEST_ARGS ?= -m "not gpu"
PYTEST_WORKERS ?= 2
SYSTEM_PACKAGES := slurm-wlm munge chromium chromium-driver graphviz git postgresql

.PHONY: setup system-deps slurm run readme test dvc-push dvc-pull dag clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	    dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; apt-get update -q; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; fi

slurm: system-deps
	scripts/ci/start_slurm.sh

run: setup
	snakemake --profile profiles/local $(ARGS)

readme: setup
	cp results/report/tables.json docs/results/tables.json
	python -c "from detnas.report.readme import write_readme as w; \
	    w('docs/results/tables.json', 'README.md')"

dag: setup
	snakemake --rulegraph $(ARGS) | dot -Tpng > dag.png

test: setup slurm
	ruff check detnas tests benchmarks scripts
	python scripts/ci/lint_workflow.py
	mkdir -p test-artifacts
	python -m pytest $(PYTEST_ARGS) -n $(PYTEST_WORKERS) --dist loadfile \
	    --junitxml=test-artifacts/junit.xml

dvc-push: setup
	scripts/dvc_push.sh

dvc-pull: setup
	scripts/dvc_pull.sh $(ARGS)

clean:
	rm -rf results logs .snakemake dag.png
