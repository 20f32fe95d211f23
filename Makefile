# The two entry points of the README. Both install what is missing first (idempotent, as root).
.PHONY: setup demo test lint clean

VENV := .venv/bin
# experiments need root; a user with sudo (the Vagrant lab) gets it transparently
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
DEMO_SPEC ?= experiments/two_path_kernel.toml
DEMO_OUT ?= results/demo

setup:
	@scripts/setup.sh

demo: setup
	$(SUDO) $(VENV)/testbed run $(DEMO_SPEC) --out $(DEMO_OUT)

# the Debian kernels the VM-endpoint tests boot (issue 14): fetched into a cache, never installed
TEST_KERNELS ?= 6.1 6.12 newest

test: setup
	$(SUDO) $(VENV)/testbed kernels fetch $(TEST_KERNELS)
	$(VENV)/ruff check .
	$(SUDO) $(VENV)/python -m pytest -q

lint: setup
	$(VENV)/ruff check .

clean:
	-$(SUDO) $(VENV)/testbed clean
