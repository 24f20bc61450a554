"""A model directory's ONNX export: its files, its report (`onnx.json`) and a classifier over them.

`switchboard train` (and `switchboard models export-onnx` for versions trained before) writes
beside the safetensors (`training.onnx_pipeline`):

```
model.onnx        the classifier in fp32: inputs as its tokenizer names them, output `logits`
model.int8.onnx   its dynamic int8 variant, only where it passed the quality rule
onnx.json         the report: the file chosen and why, the checks, the speed measurement
```

`OnnxClassifier` computes what the exported torch classifier computes: the model directory's
`tokenizer.json` read by HF's Rust `tokenizers`, truncated to `max_length` tokens exactly as
`tokenizer(text, truncation=True, max_length=...)` does, padded per batch, softmax over the
logits, columns in `ModelInfo.labels` order. It imports numpy, onnxruntime and tokenizers only
(no torch, no transformers): a `serve,onnx` install runs it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.hardware import available_cpus
from serving.model_dir import ModelDirError

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
ONNX_REPORT = "onnx.json"
TOKENIZER_FILE = "tokenizer.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"


def read_onnx_report(model_dir: str | Path) -> dict[str, Any] | None:
    """The export report (`ONNX_REPORT`), None when the directory has none."""
    path = Path(model_dir) / ONNX_REPORT
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{path}: not a readable ONNX export report ({err})") from None
    if not isinstance(report, dict):
        raise ModelDirError(f"{path}: not a readable ONNX export report (not an object)")
    return report


def served_onnx_file(model_dir: str | Path) -> Path:
    """The ONNX file the report chose (int8 where it passed the quality rule, else fp32).

    `ModelDirError` naming the reason when there is none to serve: no export, or an export that
    failed its check against the torch model."""
    path = Path(model_dir)
    report = read_onnx_report(path)
    hint = f"run `switchboard models export-onnx {path}`"
    if report is None:
        raise ModelDirError(f"{path} has no ONNX export ({ONNX_REPORT}): {hint}")
    if not report.get("passed"):
        reason = report.get("reason") or "it failed its check"
        raise ModelDirError(f"the ONNX export in {path} is not served: {reason}")
    file = path / str(report.get("file") or ONNX_FILE)
    if not file.is_file():
        raise ModelDirError(f"{path}: the ONNX file its report names is missing ({file.name}): {hint}")
    return file


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32, copy=False)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


class OnnxClassifier:
    """Texts -> class probabilities with an ONNX Runtime session on the CPU (synchronous).

    One session; `threads` intra-op threads (0: the cores this process may use). ONNX Runtime's
    worker threads do not spin waiting for work: on a small host they would take the CPU the
    router's event loop needs between batches.
    """

    def __init__(self, model_dir: str | Path, onnx_file: str | Path, *, max_length: int, threads: int = 0):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = Path(model_dir)
        tokenizer_file = path / TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise ModelDirError(f"{path} has no {TOKENIZER_FILE} (the ONNX engine reads the fast tokenizer)")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.pad_id = _pad_id(path, self.tokenizer)  # before `no_padding` drops the file's setting
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.no_padding()
        self.max_length = max_length
        self.threads = threads or available_cpus()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - set(INPUT_NAMES)
        if unknown:
            raise ModelDirError(f"{onnx_file}: unexpected ONNX inputs {sorted(unknown)}")
        classes = self.session.get_outputs()[0].shape[-1]
        self.num_classes = classes if isinstance(classes, int) else None

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The session's inputs for `texts`: truncated, right-padded to the longest."""
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = e.attention_mask
            types[row, :n] = e.type_ids
        columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: columns[name] for name in self.input_names}

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], self.encode(texts))[0]  # type: ignore[no-any-return]

    def probabilities(self, texts: Sequence[str], *, batch_size: int = 0) -> np.ndarray:
        """(N, C) float32 softmax probabilities, rows in input order. `batch_size` > 0: run in
        batches of texts of similar length (less padding), e.g. for a whole evaluation split."""
        if not texts:
            return np.zeros((0, self.num_classes or 0), dtype=np.float32)
        if batch_size <= 0 or len(texts) <= batch_size:
            return softmax(self.logits(texts))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            probs = softmax(self.logits([texts[i] for i in idx]))
            if out is None:
                out = np.zeros((len(texts), probs.shape[1]), dtype=np.float32)
            out[idx] = probs
        assert out is not None
        return out


def _pad_id(model_dir: Path, tokenizer: Any) -> int:
    """config.json's `pad_token_id` (what training padded with), else the tokenizer's, else 0."""
    try:
        pad = json.loads((model_dir / "config.json").read_text()).get("pad_token_id")
    except (OSError, ValueError):
        pad = None
    if isinstance(pad, int):
        return pad
    padding = tokenizer.padding
    return int(padding["pad_id"]) if padding else 0
