# kinema: the two commands a new user runs first.
#   make test   lint + every package's tests + wheel builds, on a machine with only python3
#   make dev    an editable install of every package into .venv, for working on kinema
PYTHON ?= python3
VENV := .venv
NOX := $(VENV)/bin/nox
NOX_VERSION := 2026.10.20

.PHONY: test lint build dev clean

$(NOX):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q nox==$(NOX_VERSION)

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
