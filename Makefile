# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv/ on first use. torch is installed first, pinned to the local CPU wheel,
# so that pip never pulls the CUDA packages; override with e.g. `make test TORCH="torch==2.8.0"`.

PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medsynth demo --out $(DEMO_OUT) --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
