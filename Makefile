# The project's vocabulary. Every target sets up what it needs, so on a fresh machine
# `make demo` and `make test` are the only two commands anyone has to know.

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
PY          := $(BIN)/python
TESTBED_DIR ?= .cache/testbed
export PYTHONPATH := $(CURDIR)/hack/testbed

.PHONY: help venv tools crds crds-check dashboard lint test test-prerequisites test-unit test-cluster demo demo-down bench bench-trainer bench-rl bench-fsdp \
        bench-server bench-llm bench-operator kind-e2e testbed-up testbed-down clean images host-packages

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

# torch as the CPU image has it (trainer-image/cpu_install.py): without triton and the CUDA libraries a
# CPU never loads, installed one wheel at a time (~3 GB on disk at the peak, not ~9 GB)
$(VENV)/.installed: pyproject.toml trainer-image/pyproject.toml trainer-image/cpu_install.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-cache-dir --upgrade pip
	$(PY) trainer-image/cpu_install.py -e '.[test]' -e './trainer-image[images]'
	touch $@

venv: $(VENV)/.installed  ## the Python environment: operator, trainer (torch) and test tools

tools:  ## build the control plane, kubelet, kube-proxy, containerd, CNI, CoreDNS, crictl, kwok, helm, Prometheus, Kueue from pinned Go modules (no-op when built)
	hack/build-tools.sh

host-packages:  ## Debian packages of real nodes and image builds (runc, iptables, buildah, ...), when missing
	hack/host-packages.sh

images: host-packages  ## build the images (operator, CPU trainer, base, pause, coredns) without Docker into .cache/images (no-op when up to date)
	hack/images/build-images.sh

crds: venv  ## regenerate crds/ and the chart's copy from the API models
	$(BIN)/aidc crds

crds-check: venv
	$(BIN)/aidc crds --check
	$(PY) hack/dashboard.py --check

dashboard: venv  ## regenerate the chart's Grafana dashboard (charts/aidc-operator/dashboards/) from hack/dashboard.py
	$(PY) hack/dashboard.py

lint: venv  ## ruff, mypy (strict on operator/aidc and trainer-image/aidc_trainer), the import contracts (layers that point down, see pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=$(CURDIR)/operator:$(CURDIR)/trainer-image $(BIN)/lint-imports

test-unit: venv  ## tests that need nothing built: models, CRDs, decisions, trainer, server
	$(BIN)/pytest -m "not cluster and not e2e"

test-cluster: venv tools images  ## tests against the loopback control plane, e2e on its real node
	$(BIN)/pytest -m "cluster or e2e"

test:  ## everything CI runs: lint, generated files, all tests
	@# the Go builds take both cores while the venv, the Debian packages and all but one image mostly
	@# download and unpack: side by side they save minutes of a fresh machine's run (on a disk with under
	@# 40 GiB free the trainer image waits for the Go build: see hack/README.md, "Disk")
	$(MAKE) --no-print-directory --jobs=3 --output-sync=target test-prerequisites
	$(BIN)/pytest
	$(BIN)/pytest -m host  # alone: it starts real nodes of its own and checks the machine is left as found

test-prerequisites: venv tools images crds-check lint

testbed-up: venv tools images  ## start the test bed by hand: control plane, 4 kwok nodes, 1 real node (kubeconfig in .cache/testbed)
	$(PY) -m aidc_testbed up --dir $(TESTBED_DIR)

testbed-down:  ## stop it
	$(PY) -m aidc_testbed down --dir $(TESTBED_DIR)

demo: venv tools images  ## the main job: a cluster with a real node, the operator by Helm, train and serve the examples (see README)
	$(PY) hack/demo.py --dir $(TESTBED_DIR)

demo-down:  ## stop what the demo left running and restore the machine
	$(PY) hack/demo.py --dir $(TESTBED_DIR) --down

bench: bench-trainer bench-rl bench-fsdp bench-server bench-llm bench-operator  ## every benchmark that exists so far, each printing a table

bench-trainer: venv  ## trainer samples/s vs a hand-written DDP loop; checkpoint save/load seconds
	$(PY) benchmarks/trainer/bench_trainer.py

bench-rl: venv  ## PPO: the trainer on 1 and 2 ranks (CleanRL defaults, the CartPole and Pendulum examples) vs a one-file loop
	$(PY) benchmarks/trainer/bench_rl.py --pendulum

bench-fsdp: venv  ## FSDP vs DDP: model state bytes per rank and tokens/s at 1, 2, 4 ranks; a 1 B model on a GPU when there is one
	$(PY) benchmarks/trainer/bench_fsdp.py

bench-server: venv  ## model server vs KServe 0.21 (own venv in .cache) in one run: req/s, p50/p99 at 1/16/64 clients (wrk on its own core)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) benchmarks/server/bench_server.py

bench-llm: venv  ## OpenAI routes (KV cache, continuous batching) vs one request at a time: tokens/s, TTFT, TPOT at 1/8/32 streams
	$(PY) benchmarks/server/bench_llm.py

bench-operator: venv tools  ## operator at scale on kwok nodes vs a bare client (flags: see the script)
	$(PY) benchmarks/operator/bench_operator.py

kind-e2e:  ## end to end on kind (needs Docker, kind, kubectl, helm): both images, the chart, train and serve digits
	hack/kind-e2e.sh

clean:  ## remove the environment, the built tools and the test bed
	-$(PY) -m aidc_testbed down --dir $(TESTBED_DIR)
	rm -rf $(VENV) .cache
