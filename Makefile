# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv with Python 3.12 and install the project the first time (a few minutes, ~6.5 GB),
# including NVIDIA PyTriton (the Triton server) and the small numpy<2 environment its Python stub needs.

SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean-venv

$(STAMP): pyproject.toml
	@set -e; py="$$(./tools/find-python3.12)"; \
	if [ ! -x "$(PY)" ]; then echo "creating $(VENV) with $$py"; "$$py" -m venv "$(VENV)"; fi; \
	$(PY) -m pip install --quiet --upgrade pip; \
	$(PY) -m pip install --quiet -e ".[dev]"; \
	$(PY) -m smat_deploy.serve.environment --install; \
	touch "$(STAMP)"

demo: $(STAMP)
	$(VENV)/bin/smat-deploy demo

test: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf "$(VENV)"
