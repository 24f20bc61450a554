"""Test support, importable as `support` (pytest puts tests/ on sys.path for its rootdir-less
conftest.py): servers, data and models here; the router unit tests' fakes, which import the
FastAPI app, in `support.fakes`.

- `support.servers`: `Server` (the product's `DevServer` with the tests' settings), `ONNX_ENGINE`
  (its environment for a router whose engine is not under test), `vllm_server`.
- `support.models`: the sample dataset, the weak champion, the chat model's served name and key.
- `support.pg`: a throwaway PostgreSQL schema.
- `support.fakes`: `FakeEngine`, `serving` (the app in-process on it), `Scrape` (/metrics).
"""

from support.feedback import store_feedback
from support.models import (
    API_KEY,
    CHAT_TEMPLATE,
    SAMPLE,
    SERVED,
    SHARED_DATASETS,
    WEAK,
    build_tiny_onnx_model,
    build_weak_champion,
    read_rows,
    sample_texts,
    served_requests,
    torch_probabilities,
)
from support.pg import pg_schema
from support.servers import ONNX_ENGINE, REPO, TEST_ENV, Server, free_port, vllm_serve_command, vllm_server

__all__ = [
    "API_KEY",
    "CHAT_TEMPLATE",
    "ONNX_ENGINE",
    "REPO",
    "SAMPLE",
    "SERVED",
    "SHARED_DATASETS",
    "TEST_ENV",
    "WEAK",
    "Server",
    "build_tiny_onnx_model",
    "build_weak_champion",
    "free_port",
    "pg_schema",
    "read_rows",
    "sample_texts",
    "served_requests",
    "store_feedback",
    "torch_probabilities",
    "vllm_serve_command",
    "vllm_server",
]
