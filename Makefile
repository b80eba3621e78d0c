# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-all demo bench validate validate-prior faults lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# The suite runs on TEST_WORKERS pytest-xdist workers (default: one per core, at most 4: each
# worker is a JAX process with 8 fake devices, and tests/sweeps/test_slurm.py, which runs on
# one worker, is the critical path by then; 0 runs it in this process, for `--pdb`).
# `--dist loadfile`: a file's tests run on one worker in order, so the SLURM tests (all in
# tests/sweeps/test_slurm.py, which tests/conftest.py enforces) never overlap.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ "$$n" -gt 4 ] && n=4; echo $$n)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=30

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The demo: a 40-run IsoFLOP sweep on the CPU (20 cells x 2 seeds, with few-shot evals; two cells
# at once, as 2 launchers: 1.4-1.5x sooner than one on 2 cores, same losses bitwise), an ablation
# of three runs (smallest, middle, largest size, seed 0) at the largest budget (which heads / MLP blocks the few-shot tasks
# need; a subset of tasks, shots and fractions, to stay near a minute), a small fine-tuning study
# (3 model sizes x full and LoRA x 3 values of D_f on the held-out task `upper`), then fits,
# bootstrap CIs, back-test, emergence, the fine-tuning law and figures in runs/demo/report/.
# Rerunning reuses finished work.
DEMO_ABLATE = --budget largest --sizes 3 --tasks add2,kv_recall,repeat --shots 0,1 \
	--n-items 32 --fractions 0.2,0.4,0.6,0.8 --resamples 500

DEMO_FINETUNE := --task upper --df 16,64,256 --method full --method lora:r=4 --sizes 3 \
	--set eval_items=64

demo: $(STAMP)
	$(VENV)/bin/scaling sweep run demo --out runs/demo --workers 2
	$(VENV)/bin/scaling ablate runs/demo $(DEMO_ABLATE)
	$(VENV)/bin/scaling finetune runs/demo $(DEMO_FINETUNE)
	$(VENV)/bin/scaling analyze runs/demo
	@echo "checks of the study:"
	$(PY) -m analysis.checks runs/demo/report/fits.json
	@echo "report: runs/demo/report/report.md  (figures: runs/demo/report/*.png)"

# Predictive intervals on real published sweeps (../shared/data): error, coverage, half-width.
validate: $(STAMP)
	$(PY) -m analysis.laws.validate

# Re-derive analysis/laws/interval_prior.json (the extrapolation prior) from the same back-tests.
validate-prior: $(STAMP)
	$(PY) -m analysis.laws.validate --write-prior

# The train step, the demo grid's throughput (issue 13: compile, step, loop overhead, efficiency
# of its smallest and largest cell, and the whole grid against the previous implementation;
# about 10 minutes on 2 cores; `--previous REV` compares with a git revision), then the fitting
# benchmark.
bench: $(STAMP)
	$(PY) -m scaling.bench
	$(PY) -m sweeps.bench_demo
	$(PY) -m analysis.laws.bench

# The fault suite of issue 12, for real (spawns training processes; a few minutes on 2 cores):
# malformed inputs, damaged files, signals, a full disk (tmpfs, needs root), kill -9 and resume.
faults: $(STAMP)
	$(PY) scripts/faults.py

lint: $(STAMP)
	$(VENV)/bin/ruff check scaling sweeps analysis tests scripts
	$(VENV)/bin/ruff format --check scaling sweeps analysis tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff format scaling sweeps analysis tests scripts
	$(VENV)/bin/ruff check --fix scaling sweeps analysis tests scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
