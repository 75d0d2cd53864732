# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
# Both create a local virtual environment in .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# A CPU build of torch first, or stable-baselines3 pulls several GB of CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	# The tested versions (constraints.txt); pyproject.toml keeps ranges for library users.
	$(BIN)/pip install --quiet -c constraints.txt -e ".[sb3,notebooks,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crashgym run --scenario oct10 --seeds 16 --plot out/oct10.png --json out/oct10.json

# The notebooks run at small sizes in the suite (CRASHGYM_NOTEBOOK_SMALL=1). Their cell
# timeout sits above the hang watchdog's 600 s (tests/conftest.py), so a wedged kernel is
# caught by the watchdog, which reruns the notebook once, instead of failing at nbmake's 300 s.
test: $(STAMP)
	CRASHGYM_NOTEBOOK_SMALL=1 $(BIN)/python -m pytest -n 2 --nbmake --nbmake-timeout=900 tests notebooks

bench: $(STAMP)
	$(BIN)/crashgym bench

clean:
	rm -rf $(VENV) .jax_cache out
