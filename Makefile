# The two entry points of the README. Both install what is missing first (idempotent, as root).
.PHONY: setup demo test lint clean

VENV := .venv/bin
DEMO_SPEC ?= experiments/two_path_kernel.toml
DEMO_OUT ?= results/demo

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/testbed run $(DEMO_SPEC) --out $(DEMO_OUT)

test: setup
	$(VENV)/ruff check .
	$(VENV)/python -m pytest -q

lint: setup
	$(VENV)/ruff check .

clean:
	-$(VENV)/testbed clean
