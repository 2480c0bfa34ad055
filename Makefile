# Every target creates its own virtual environment on first use; only python3 is needed.
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE ?= sample_data/lab-vxlan.tgz

.PHONY: demo report test lint bench bench-join samples docs clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/calforensics analyze $(SAMPLE)

# the example report committed under reports/ (same command, same bytes)
report: $(VENV)/.installed
	$(VENV)/bin/calforensics analyze $(SAMPLE) -o reports/lab-vxlan
	$(VENV)/bin/calforensics analyze sample_data/lab-dual.tgz -o reports/lab-dual
	$(VENV)/bin/calforensics diff sample_data/lab-open.tgz $(SAMPLE) -o reports/diff-lab-open-lab-vxlan

test: $(VENV)/.installed
	$(VENV)/bin/ruff check calforensics tests bench sample_data
	$(PY) -m pytest -q

# every figure in docs/performance.md, one benchmark after another (bench_bounded needs root)
bench: $(VENV)/.installed
	$(PY) bench/bench_ingest.py --packets 2000000
	$(PY) bench/bench_scale.py
	$(PY) bench/bench_scale.py --captures 1 --packets-per-capture 2000000
	$(PY) bench/bench_join.py --flows 20000
	$(PY) bench/bench_analyze.py --flows 20000
	$(PY) bench/bench_analyze.py --flows 80000
	$(PY) bench/bench_analyze.py --flows 20000 --tables none --workers 1 --fragment-every 10
	$(PY) bench/bench_analyze.py --flows 20000 --tables none --workers 1 --any-v1
	$(PY) bench/bench_analyze.py --flows 20000 --tables none --incident
	$(PY) bench/bench_bounded.py --packets 3000000 --limit-mb 400
	$(PY) bench/bench_bounded.py --join --analyze --flows 20000 --limit-mb 300 --partition-packets 250000
	$(PY) bench/bench_analyze.py --flows 80000 --workers 1 2 --tables none --spill
	$(PY) bench/bench_wireguard.py --packets 500000

bench-join: $(VENV)/.installed
	$(PY) bench/bench_join.py --flows 20000

# needs root, iproute2, iptables, conntrack and tcpdump: builds the lab in network namespaces
samples: $(VENV)/.installed
	$(PY) sample_data/lab.py sample_data
	$(PY) sample_data/ipip.py sample_data/lab-vxlan.tgz sample_data/lab-ipip.tgz
	$(PY) sample_data/ebpf.py sample_data/lab-vxlan.tgz sample_data/lab-ebpf.tgz
	tmp=$$(mktemp -d) && $(PY) sample_data/lab.py $$tmp --tunnel-mtu 1440 --name lab-wg-base && \
		$(PY) sample_data/wireguard.py $$tmp/lab-wg-base.tgz sample_data/lab-wireguard.tgz && rm -rf $$tmp
	$(PY) sample_data/lab.py sample_data --scenarios dual --name lab-dual
	$(PY) sample_data/lab.py sample_data --policy open --name lab-open

docs: $(VENV)/.installed
	$(PY) -m calforensics.schema > docs/tables.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
