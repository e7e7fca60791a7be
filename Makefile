# The two commands of the README: `make demo` (main job on the embedded
# default data) and `make test`. Both create .venv and install the pinned
# environment when it is missing or out of date.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sdk-installed

.PHONY: install lint demo test test-fast bench clean

install: $(STAMP)

# torch 2.13.0 first (pip takes the CPU wheel that lies on this machine's disk),
# then the frozen set with --no-deps: finn-plus's own pins conflict with
# torch 2.13 (docs/ARCHITECTURE.md, "Dependencies"), so no resolver run may touch them.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==26.3"
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# every core (pytest-xdist), a test file per worker at a time: see tests/conftest.py
test: lint
	$(PY) -m pytest -q -ra -n auto --dist loadfile --no-loadscope-reorder

test-fast: lint
	$(PY) -m pytest -q -ra -n auto --dist loadfile --no-loadscope-reorder -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/train_fashion_mnist.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
