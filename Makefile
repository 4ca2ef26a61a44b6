# Quick start: `make demo` and `make test`. Both create .venv when absent.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned for this install only (they lie on the CI machine's disk);
# pyproject.toml keeps permissive ranges for users.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[dev,ray,faster]' $(TORCH_PIN)
	touch $(STAMP)

# The whole story on the CPU: the variants, a speed sweep, a small ablation on the synthetic data, the report.
# The sweep's 1.0 s a measurement, spent per stage, gives the merge about 200 interleaved cycles (~160 s): five
# back-to-back runs of it gave the merge's floor exponent against R within 0.05 of each other and the same verdicts
# (docs/results.md).
demo: $(STAMP)
	$(BIN)/bmbench variants
	$(BIN)/bmbench speed --vary R --values 14,28,42,56,84,112 --variants blendmask --instances 1..100 --trunk small --image-size 320x256 --threads 1 --budget-s 1.0 --max-repeats 400 --peers
	$(BIN)/bmbench ablate suites/demo.yaml
	$(BIN)/bmbench report --results results --out results/report.md

lint: $(STAMP)
	$(BIN)/ruff check bmbench tests
	$(BIN)/ruff format --check bmbench tests

test: lint
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
