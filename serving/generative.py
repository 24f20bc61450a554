"""vLLM engines for generative models (`objective: generate`): label probabilities, not text.

The model is a causal LM served with vLLM's generate runner and prefix caching. A query becomes
one request per inner node of the labels' token trie (`serving.label_scoring.LabelTrie`): the
prompt + that node's answer prefix, one generated token (greedy, ignored), and the
log-probabilities of the node's children (`SamplingParams.logprob_token_ids`, raw log-softmax
over the whole vocabulary). The products along each label's path, EOS included, normalised over
the labels, are the probabilities `classify` returns: the same shape and meaning as the
classification head's, so the router cannot tell the two kinds of model apart, and no answer can
fall outside the label set.

Cost per query (see docs/BENCHMARKS.md "Objectives"): `len(trie.nodes)` engine requests instead of
one; the instruction, shared by every request, is computed once and then read from the prefix
cache (in whole KV blocks), so each request computes the query, the answer marker and a few
answer tokens.

`GenerativeEngine` is the in-process async engine (the router's; `serving.factory.open_engine`
picks it for a generative model directory). `open_generative_llm` + `score_texts` are the offline
path (evaluation, agreement checks, benchmarks); scripts using it need a `__main__` guard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from vllm import SamplingParams
from vllm.v1.engine.async_llm import AsyncLLM

from serving.engine import EngineError
from serving.label_scoring import LabelTrie, PromptError, PromptTokens, read_intent_prompt
from serving.local import (
    LocalEngine,
    _BatchSink,
    _gather_or_cancel,
)
from serving.model_dir import ModelInfo
from serving.offline import engine_kwargs


def generative_engine_kwargs(
    model_dir: str | Path,
    *,
    dtype: str = "auto",
    eager: bool = False,
    gpu_memory_utilization: float = 0.9,
) -> dict[str, Any]:
    """Engine arguments of a generative model dir: the generate runner, prefix caching, and a
    `max_model_len` that fits the longest prompt + answer (measured at export)."""
    prompt = read_intent_prompt(model_dir)
    if prompt is None:
        raise EngineError(f"{model_dir} is not a generative model (no generative.json)")
    kwargs = engine_kwargs(
        model_dir,
        max_model_len=max(prompt.max_sequence_tokens, 16),
        dtype=dtype,
        eager=eager,
        gpu_memory_utilization=gpu_memory_utilization,
    )
    kwargs.pop("pooler_config", None)
    kwargs["runner"] = "generate"
    kwargs["enable_prefix_caching"] = True
    return kwargs


def node_params(trie: LabelTrie) -> list[SamplingParams]:
    """One `SamplingParams` per trie node: one greedy token, the node's children's logprobs."""
    return [
        SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(node.children), detokenize=False)
        for node in trie.nodes
    ]


def _logprobs(output: Any) -> Mapping[int, float]:
    """token id -> log-probability of the first generated position of a vLLM `RequestOutput`."""
    step = output.outputs[0].logprobs[0]
    return {int(token): float(lp.logprob) for token, lp in step.items()}


def _scorer(
    prompt_file_dir: str | Path, tokenizer: Any, max_model_len: int
) -> tuple[PromptTokens, LabelTrie]:
    prompt = read_intent_prompt(prompt_file_dir)
    if prompt is None:
        raise EngineError(f"{prompt_file_dir} is not a generative model (no generative.json)")
    try:
        tokens = PromptTokens(prompt, tokenizer)
    except PromptError as err:
        raise EngineError(str(err)) from err
    if tokens.max_sequence_length() > max_model_len:
        raise EngineError(
            f"the longest prompt + answer is {tokens.max_sequence_length()} tokens, over the engine's "
            f"max_model_len {max_model_len}"
        )
    return tokens, LabelTrie(tokens.label_ids)


class GenerativeEngine(LocalEngine):
    """`Engine` over an in-process `AsyncLLM` serving a generative model: label probabilities
    from the logprobs of each label's tokens (see the module docstring)."""

    def __init__(self, info: ModelInfo, llm: AsyncLLM, *, timeout_s: float, sink: _BatchSink) -> None:
        super().__init__(info, llm, timeout_s=timeout_s, sink=sink)
        max_model_len = int(llm.model_config.max_model_len)
        self.tokens, self.trie = _scorer(info.model_dir, llm.tokenizer, max_model_len)
        if tuple(self.tokens.prompt.labels) != tuple(info.labels):
            raise EngineError("generative.json and config.json disagree on the labels")
        self._node_params = node_params(self.trie)
        # the root's requests go first, so the others read the prompt from the prefix cache
        self._first = [i for i, node in enumerate(self.trie.nodes) if not node.prefix]
        self._rest = [i for i, node in enumerate(self.trie.nodes) if node.prefix]

    @classmethod
    def engine_kwargs(
        cls, info: ModelInfo, *, dtype: str, eager: bool, gpu_memory_utilization: float
    ) -> dict[str, Any]:
        return generative_engine_kwargs(
            info.model_dir, dtype=dtype, eager=eager, gpu_memory_utilization=gpu_memory_utilization
        )

    async def _probabilities(self, llm: AsyncLLM, texts: Sequence[str]) -> np.ndarray:
        rows = await _gather_or_cancel([self._score(llm, text) for text in texts])
        return np.stack(rows).astype(np.float32)

    async def _score(self, llm: AsyncLLM, text: str) -> np.ndarray:
        prompt = self.tokens.prompt_ids(text)
        answers: list[Mapping[int, float]] = [{}] * len(self.trie.nodes)
        for group in (self._first, self._rest):
            results: list[Any] = await _gather_or_cancel([self._node(llm, prompt, i) for i in group])
            for i, logprobs in zip(group, results, strict=True):
                answers[i] = logprobs
        return self.trie.probabilities(answers)

    async def _node(self, llm: AsyncLLM, prompt: list[int], index: int) -> Mapping[int, float]:
        node = self.trie.nodes[index]
        request_id = f"{self._id_prefix}{next(self._ids)}"
        final = None
        async for output in llm.generate(
            {"prompt_token_ids": prompt + list(node.prefix)}, self._node_params[index], request_id=request_id
        ):
            final = output
        if final is None:
            raise EngineError(f"vLLM returned no output for request {request_id}")
        return _logprobs(final)


# ------------------------------------------------------------------------------ offline path


def open_generative_llm(model_dir: str | Path, *, dtype: str = "auto", eager: bool = False) -> Any:
    from vllm import LLM

    return LLM(**generative_engine_kwargs(model_dir, dtype=dtype, eager=eager))


def score_texts(
    llm: Any, model_dir: str | Path, texts: Sequence[str], *, progress: bool = False
) -> np.ndarray:
    """(N, C) label probabilities of an offline `vllm.LLM` on a generative model dir: every node
    request of every text in one `generate` call."""
    max_model_len = int(llm.llm_engine.model_config.max_model_len)
    tokens, trie = _scorer(model_dir, llm.get_tokenizer(), max_model_len)
    params = node_params(trie)
    prompts = [tokens.prompt_ids(t) for t in texts]
    requests = [{"prompt_token_ids": p + list(node.prefix)} for p in prompts for node in trie.nodes]
    outputs = llm.generate(requests, params * len(prompts), use_tqdm=progress)
    n = len(trie.nodes)
    rows = [
        trie.probabilities([_logprobs(o) for o in outputs[i * n : (i + 1) * n]]) for i in range(len(texts))
    ]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, len(trie.label_ids)), np.float32)
