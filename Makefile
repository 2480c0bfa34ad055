# Every target creates its own virtual environment on first use; only python3 is needed.
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE ?= sample_data/two-node-vxlan.tgz

.PHONY: demo test lint bench samples docs clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/calforensics inspect $(SAMPLE)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check calforensics tests bench sample_data
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/bench_ingest.py

samples: $(VENV)/.installed
	$(PY) sample_data/make_samples.py

docs: $(VENV)/.installed
	$(PY) -m calforensics.schema > docs/tables.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
