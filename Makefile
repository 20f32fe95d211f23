# The two entry points of the README. Both install what is missing first (idempotent, as root).
.PHONY: setup demo test lint clean lab-setup lab-box lab-up lab-demo lab-destroy lab-cycle

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

# libvirt for the suite's lab boot check (tests/integration/vm/test_lab_boot.py), set up before
# pytest so that its daemons, network and firewall tables are not taken for the suite's leaks
test: setup
	$(SUDO) $(VENV)/testbed kernels fetch $(TEST_KERNELS)
	$(SUDO) $(VENV)/testbed lab setup
	$(VENV)/ruff check .
	$(SUDO) $(VENV)/python -m pytest -q

lint: setup
	$(VENV)/ruff check .

clean:
	-$(SUDO) $(VENV)/testbed clean

# the Vagrant lab on libvirt (docs/lab.md): provider and daemons, the box built from Debian
# packages, then the VM's life cycle; `make lab-cycle` does all of it and times every step
lab-setup: setup
	$(SUDO) $(VENV)/testbed lab setup

lab-box: lab-setup
	$(SUDO) $(VENV)/testbed lab box

lab-up: lab-box
	$(SUDO) $(VENV)/testbed lab up

lab-demo:
	$(SUDO) $(VENV)/testbed lab demo

lab-destroy:
	$(SUDO) $(VENV)/testbed lab destroy

lab-cycle: setup
	$(SUDO) $(VENV)/testbed lab cycle
