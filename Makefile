# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
# `make lint` checks the workflow's formatting and lints, `make format` formats it.
#
# torch is installed first and pinned: on this project's CPU machines `torch==2.13.0` is a local
# CPU wheel (seconds); an unpinned torch would pull a CUDA build of several GB. Elsewhere pick
# your build, e.g. `make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"`
# or use the conda route (environment.yml).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CORES ?= all
TEST_WORKERS ?= auto
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format benchmark report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[workflow,test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores 1 --report report.html
	@echo "Demo done: results/summary.tsv, results/<scan>/, report.html"

# One test worker per core (pytest-xdist); a module's tests stay on one worker, as its fixtures
# (a campaign run once for all its tests) are module-scoped. `make test TEST_WORKERS=0`: serial.
test: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# Also part of `make test` (tests/test_lint.py).
lint: install
	$(BIN)/snakefmt --check workflow/
	$(BIN)/snakemake --lint

format: install
	$(BIN)/snakefmt workflow/

benchmark: install
	$(BIN)/python benchmarks/bench_alignment.py
	$(BIN)/python benchmarks/bench_network.py
	$(BIN)/python benchmarks/bench_campaign.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_default.py
	$(BIN)/python benchmarks/bench_truncated_seeds.py
	$(BIN)/python benchmarks/bench_fbp.py
	$(BIN)/python benchmarks/bench_scale.py

report: install
	$(BIN)/snakemake --cores 1 --report report.html

clean:
	rm -rf results logs data/demo .snakemake report.html
