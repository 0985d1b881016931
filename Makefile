# Two user-facing targets: `make run` and `make test`. Both work on a fresh clone with only
# Python 3 installed; they create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test data gradcheck bench mutate clean

run: $(VENV)/.installed
	$(BIN)/crosscheck train

# Two test processes (pytest-xdist): in one, CI's 2-core run took 927 s of its 15-minute limit
# (2026-12-06). TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

data: $(VENV)/.installed
	$(BIN)/crosscheck data

gradcheck: $(VENV)/.installed
	$(BIN)/crosscheck gradcheck

bench: $(VENV)/.installed-jax
	$(BIN)/crosscheck bench

# Mutation testing of the referee's core (not in CI; its run time and score: docs/referee.md);
# [tool.mutmut] in pyproject.toml says which modules and tests (a full run: 8 min on 2 idle cores, 40 on loaded ones).
mutate: $(VENV)/.installed-mutate
	nice -n 15 $(BIN)/mutmut run; status=$$?; $(BIN)/mutmut results; exit $$status

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

# The bench's jax.jit column needs the jax extra (about 620 MB); without it the bench skips the column.
$(VENV)/.installed-jax: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[jax]'
	touch $@ $(VENV)/.installed

# The tests install the jax extra too, so that the JAX step's equivalence test runs (in CI as well).
# Either extra is a superset of the plain install, so it satisfies `make run` too.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,jax]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-jax

$(VENV)/.installed-mutate: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,mutate]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis mutants
