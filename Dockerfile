# Switchboard router for GPU deployment: FastAPI + the in-process vLLM engine (CUDA).
#
# Build:  docker build -t switchboard-router .
# Run:    docker run --gpus all --ipc=host -p 8000:8000 --stop-timeout 45 \
#           -v "$PWD/runs/minilm-banking77:/models/current:ro" \
#           -v switchboard-data:/data \
#           switchboard-router
# The model directory is whatever `switchboard train` exported (or a registry alias such as
# champion/); the request log is SQLite in the /data volume unless SWITCHBOARD_DATABASE_URL
# names a PostgreSQL server. Any SWITCHBOARD_* variable (docs/ROUTER.md) can be passed with -e;
# arguments after the image name go to `switchboard serve` (e.g. --engine remote --url ...).

# vLLM's own CUDA image, pinned to the vLLM release the project is tested with (0.32.x): CUDA,
# PyTorch and vLLM come from one place, built for each other.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/hf-home \
    SWITCHBOARD_MODEL_DIR=/models/current \
    SWITCHBOARD_DATABASE_URL=sqlite:////data/switchboard.db \
    SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_PORT=8000 \
    SWITCHBOARD_PRICES_FILE=/opt/switchboard/data/prices.yaml

WORKDIR /opt/switchboard
# Only what the package needs, so code edits do not invalidate the dependency layer below.
COPY pyproject.toml README.md ./
COPY training ./training
COPY serving ./serving
COPY router ./router
# token prices for the cascade mode's cost metrics (prices_file)
COPY data/prices.yaml ./data/prices.yaml
# The base image installs into the system Python with uv (as vLLM's docs do). A router-only
# install: `serve` is the API/server/store, `gpu` pins vllm to the release already in the image, so
# only the router's own dependencies are added; no `train` (peft, datasets, scikit-learn,
# matplotlib, bitsandbytes). The smoke test imports the app and the CLI the entrypoint runs and
# checks neither loads those (tests/test_layers.py checks the same), then imports the engine.
# EXTRAS=serve,train,gpu builds the retrain image (deploy/kubernetes/retrain-cronjob.yaml, and
# discover-cronjob.yaml's `switchboard intents discover`).
ARG EXTRAS=serve,gpu
RUN uv pip install --system --no-cache ".[${EXTRAS}]" \
    && python3 -c "import sys, router.app, router.cli, serving.engine; \
bad = sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'matplotlib', 'datasets', 'peft', 'bitsandbytes'}); \
assert not bad, f'the router loads training-only libraries: {bad}'" \
    && python3 -c "import vllm; print('vllm', vllm.__version__)"

# Run as an unprivileged user; it owns nothing but the data volume.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin switchboard \
    && mkdir -p /data /models \
    && chown switchboard:switchboard /data
USER switchboard
VOLUME ["/models", "/data"]
EXPOSE 8000

# Healthy = /readyz answers 200: the model is loaded and answers a probe classification.
# Loading a large model takes a while, hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('SWITCHBOARD_PORT', '8000'), timeout=4)"]

# SIGTERM (docker stop) drains in-flight requests and flushes the request log, all within
# SWITCHBOARD_SHUTDOWN_TIMEOUT_S (25 s, one budget); `--stop-timeout` above it leaves margin.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchboard", "serve"]
CMD []
