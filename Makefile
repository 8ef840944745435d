# kinema: the commands a new user runs first.
#   make demo   the CPU quickstart: ACT vs the hybrid on the docking task, and a world model trained to follow
#               drone actions -> runs/demo/index.md
#   make test   lint + every package's tests + wheel builds, on a machine with only python3
#   make dev    an editable install of every package into .venv, for working on kinema
PYTHON ?= python3
VENV := .venv
NOX := $(VENV)/bin/nox
NOX_VERSION := 2026.10.20

.PHONY: demo test lint build dev clean

$(NOX):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q nox==$(NOX_VERSION)

# The demo's packages, installed together so the kinema siblings resolve to these folders (never PyPI), torch
# from constraints.txt (the CPU wheel). Skipped when .venv already has them (make dev).
DEMO_PACKAGES := packages/conditioning packages/robot_data packages/act_policy packages/hybrid_policy \
	"packages/video_world_model[drone]"

$(VENV)/bin/kinema-wm:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -c constraints.txt $(DEMO_PACKAGES)

demo: $(VENV)/bin/kinema-wm
	$(VENV)/bin/kinema-hybrid demo --out runs/demo/policies
	$(VENV)/bin/kinema-wm demo --out runs/demo/world_model
	@printf '%s\n' "# kinema demo" "" \
	  "- [Policies: ACT vs the ACT + diffusion hybrid on the two-mode docking task](policies/report.md)" \
	  "- [World model: a small Wan model trained to follow drone actions](world_model/report.md)" \
	  > runs/demo/index.md
	@echo "demo: runs/demo/index.md"

test: $(NOX)
	$(NOX) -s lint tests build

lint: $(NOX)
	$(NOX) -s lint

build: $(NOX)
	$(NOX) -s build

dev: $(NOX)
	$(VENV)/bin/python -m pip install -q -c constraints.txt $(foreach p,$(wildcard packages/*),-e $(p)[test]) ruff==0.17.6

clean:
	rm -rf .nox dist
