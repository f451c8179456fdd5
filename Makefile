# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv with Python 3.12 and install the project the first time (a few minutes, ~6.5 GB),
# including NVIDIA PyTriton (the Triton server) and the small numpy<2 environment its Python stub needs;
# `make test` also installs Debian's chromium for the page's browser tests when no Chromium is on PATH, and
# builds the C++ library (`make cpp`: cpp/build, with its Debian build dependencies) whose tests it runs.
# The install is ".[all,dev]" at the exact versions in constraints.txt; `make constraints` re-resolves those.

SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test cpp lint format constraints clean-venv

$(STAMP): pyproject.toml constraints.txt
	@set -e; py="$$(./tools/find-python3.12)"; \
	if [ ! -x "$(PY)" ]; then echo "creating $(VENV) with $$py"; "$$py" -m venv "$(VENV)"; fi; \
	$(PY) -m pip install --quiet --upgrade pip; \
	$(PY) -m pip install --quiet -e ".[all,dev]" -c constraints.txt; \
	$(PY) -m smat_deploy.serve.environment --install; \
	touch "$(STAMP)"

demo: $(STAMP)
	$(VENV)/bin/smat-deploy demo

# The C++ library and C ABI (docs/cpp.md): cpp/build/libsmat.so and cpp/build/smat_matte. OpenVINO's C++
# runtime comes from the openvino wheel in .venv; tools/install-cpp-deps installs the Debian packages.
cpp: $(STAMP)
	./tools/install-cpp-deps
	cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release -DSMAT_PYTHON=$(abspath $(PY)) >/dev/null
	cmake --build cpp/build -j "$$(nproc)"

# The browser tests need Chromium (tools/install-chromium: Debian's package when none is on PATH), and must
# run here rather than skip: SMAT_BROWSER_TESTS=required turns a missing browser into a failure.
test: $(STAMP) cpp
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	./tools/install-chromium
	SMAT_BROWSER_TESTS=required $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Re-resolve ".[all,dev]" in a throwaway venv without constraints and write the exact versions to
# constraints.txt (several GB of downloads); the next `make test` or `make demo` then installs them.
constraints:
	./tools/update-constraints

clean-venv:
	rm -rf "$(VENV)"
