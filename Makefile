# Two commands do all setup on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench mutate install clean fuzz

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,bench,serve]"
	$(PY) -m mcmargin.pipeline.warmup   # compile the numba kernels into their on-disk cache now, not on the first run
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m jobs.stress $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

# Property-based fuzzing of every loader and config (tests/fuzz.py): the "full" hypothesis profile,
# 1,500 examples per loader, over 10,000 in all (make test runs the small "ci" profile); every
# tests/test_fuzz_*.py takes part, so a new job's loaders join by adding theirs.
fuzz: $(STAMP)
	MCMARGIN_FUZZ=full $(PY) -m pytest -q -n $(or $(JOBS),2) $(wildcard tests/test_fuzz_*.py)

bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

# Mutation testing (not in CI): mutmut over the figure-computing modules ([tool.mutmut] in
# pyproject.toml), then the score and the survivors appended to benchmarks/RESULTS.md.
mutate: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench,serve,mutate]"
	$(PY) -m mutmut run --max-children $(or $(JOBS),2) || true
	$(PY) -m benchmarks.mutation

clean:
	rm -rf $(VENV) outputs out *.egg-info mutants
