"""`objective: generate`: instruction fine-tuning with TRL, served as label probabilities.

Fast: the prompt and label tokens (bad labels, shared prefixes, long queries), the trie's
probabilities, and transformers' cached label scoring against full sequences on the tiny Llama.
Slow: QLoRA SFT on the tiny Llama -> merged export -> vLLM agreement -> `switchboard serve`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import Server

from serving.label_scoring import (
    IntentPrompt,
    LabelTrie,
    PromptError,
    PromptTokens,
    normalise,
    read_intent_prompt,
)
from training.config import ConfigError, build_config, load_config


class CharTokenizer:
    """One token per character (ids = code points), BOS 1, EOS 2: predictable tries."""

    eos_token_id = 2

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]


def test_objective_defaults_to_classify_and_is_checked() -> None:
    assert build_config({}).model.objective == "classify"
    assert build_config({}, ["model.objective=generate"]).model.objective == "generate"
    with pytest.raises(ConfigError, match=r"model\.objective"):
        build_config({"model": {"objective": "write"}})


def test_the_generate_preset_loads() -> None:
    config = load_config("configs/llama-3.2-1b-qlora-generate.yaml")
    twin = load_config("configs/llama-3.2-1b-qlora.yaml")
    assert config.model.objective == "generate" and config.model.method == "qlora"
    assert (config.model.base_model, config.data, config.optim.seed) == (
        twin.model.base_model,
        twin.data,
        twin.optim.seed,
    )


def test_labels_sharing_a_prefix_share_requests_and_the_end_marker_decides() -> None:
    tokens = PromptTokens(IntentPrompt(("card", "card_arrival", "cash")), CharTokenizer())
    trie = LabelTrie(tokens.label_ids)
    eos = CharTokenizer.eos_token_id
    assert tokens.label_ids[0] == (*[ord(c) for c in " card"], eos)
    prefixes = [node.prefix for node in trie.nodes]
    assert len(prefixes) == len(set(prefixes))  # one request per inner node
    card = tuple(ord(c) for c in " card")
    node = next(n for n in trie.nodes if n.prefix == card)
    assert set(node.children) == {eos, ord("_")}  # `card` ends here or goes on
    # every step certain, except: after " card" EOS is unlikely -> `card_arrival` wins over `card`
    answers = [
        {t: (math.log(0.1) if (n.prefix == card and t == eos) else 0.0) for t in n.children}
        for n in trie.nodes
    ]
    probs = trie.probabilities(answers)
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1.0)
    assert probs.argmax() == 1
    # a label that is a prefix of another is not favoured for being shorter
    answers = [{t: math.log(1 / len(n.children)) for t in n.children} for n in trie.nodes]
    probs = trie.probabilities(answers)
    assert probs[0] == pytest.approx(probs[1]) and probs[2] == pytest.approx(2 * probs[0])


@pytest.mark.parametrize(
    ("labels", "match"),
    [(("bill", ""), "tokenises to nothing"), (("bill", "   "), "tokenises to nothing"), ((), "no labels")],
)
def test_labels_that_cannot_be_scored_are_errors(labels: tuple[str, ...], match: str) -> None:
    with pytest.raises(PromptError, match=match):
        PromptTokens(IntentPrompt(labels), CharTokenizer())


def test_labels_that_tokenise_alike_or_hold_the_end_marker_are_errors() -> None:
    class Lossy(CharTokenizer):
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return super().encode(text.lower(), add_special_tokens)

    with pytest.raises(PromptError, match="same tokens"):
        PromptTokens(IntentPrompt(("Refund", "refund")), Lossy())
    with pytest.raises(PromptError, match="end-of-text"):
        PromptTokens(IntentPrompt(("ok\x02",)), CharTokenizer())


def test_a_query_over_the_max_length_is_truncated_not_refused() -> None:
    prompt = IntentPrompt(("bill", "refund"), {"bill": "questions about a bill"}, max_query_tokens=8)
    tokens = PromptTokens(prompt, CharTokenizer())
    long_ids = tokens.prompt_ids("x" * 1000)
    assert long_ids == tokens.prompt_ids("x" * 7)  # " " + 7 x = the 8-token budget
    assert len(long_ids) + max(map(len, tokens.label_ids)) == tokens.max_sequence_length()
    assert "- bill: questions about a bill" in prompt.render("hi")


def test_normalise_sums_to_one_even_for_impossible_rows() -> None:
    probs = normalise(np.array([[-1.0, -2.0, -3.0], [-np.inf, -np.inf, -np.inf], [-900.0, -901.0, -np.inf]]))
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.allclose(probs[1], 1 / 3) and probs[2, 2] == 0.0


@pytest.mark.parametrize("token_budget", [1, 2**18], ids=["one-text-per-batch", "all-texts-in-one-batch"])
def test_cached_label_scoring_matches_full_sequences(tiny_llama: Path, token_budget: int) -> None:
    """The scorer's KV-cache shortcut (instruction once, queries once, labels batched) computes
    exactly log P(label tokens + EOS | prompt) of a plain forward pass over each sequence, whether
    texts of different lengths share a batch (padded, masked) or not."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.generative_scoring import LabelScorer
    from training.modeling import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    tokenizer = load_tokenizer(str(tiny_llama))
    labels = ("bill_explanation", "bill", "refund_request", "no_signal")  # `bill` prefixes another
    tokens = PromptTokens(IntentPrompt(labels, max_query_tokens=12), tokenizer)
    texts = ["why is my bill so high", "refund please " * 20, "no signal at home", "bill"]
    scorer = LabelScorer(model, tokens, token_budget=token_budget)
    assert len(scorer._batches([tokens.query_ids(t) for t in texts])) == (4 if token_budget == 1 else 1)
    cached = scorer.log_scores(texts)
    with torch.no_grad():
        for row, text in enumerate(texts):
            prompt = tokens.prompt_ids(text)
            for col, answer in enumerate(tokens.label_ids):
                ids = torch.tensor([prompt + list(answer)])
                logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
                full = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(answer))
                assert cached[row, col] == pytest.approx(full, abs=1e-4)


# ------------------------------------------------------------------------------ end to end


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_qlora_sft_with_trl_export_vllm_agreement_and_serve(
    tiny_llama: Path, minilm_model: Path, sample_dir: Path, tmp_path: Path
) -> None:
    from training.train import train

    out = tmp_path / "llama-generate"
    config = build_config(
        {
            "model": {
                "base_model": str(tiny_llama),
                "objective": "generate",
                "method": "qlora",
                "max_length": 32,
            },
            "lora": {"r": 8, "alpha": 16},
            "data": {"dataset": str(sample_dir)},
            "optim": {"max_steps": 3, "batch_size": 8, "learning_rate": 3e-3, "logging_steps": 1},
            "output_dir": str(out),
        }
    )
    result = train(config, progress=False)

    # merged causal LM export: no adapter, the label map in config.json, the prompt beside it
    exported = json.loads((out / "config.json").read_text())
    assert exported["architectures"] == ["LlamaForCausalLM"] and len(exported["id2label"]) == 10
    assert not (out / "adapter_config.json").exists()
    prompt = read_intent_prompt(out)
    assert prompt is not None and prompt.max_query_tokens == 32 and prompt.max_sequence_tokens > 32
    assert result.metrics["training"]["objective"] == "generate" and result.metrics["test"]["n"] == 60
    for name in ("metrics.json", "baseline.json", "routes.yaml", "fewshot.json", "README.md"):
        assert (out / name).is_file(), name

    # vLLM's label probabilities sum to 1 and agree with transformers' (>= 99.5%)
    done = _cli("check-vllm", str(out), "--dataset", str(sample_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["objective"] == "generate" and report["labels_match"], report
    assert report["agreement"] >= 0.995 and report["max_row_sum_error"] < 1e-4, report

    # `switchboard evaluate` accepts the generative model and reproduces the training metrics
    done = _cli("evaluate", str(out), "--dataset", str(sample_dir), "--json", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])

    # `switchboard bench` takes both objectives: a row each, both run on vLLM, a cascade each
    bench = tmp_path / "bench"
    done = _cli(
        "bench", "-d", str(sample_dir), "-o", str(bench), "-m", str(minilm_model), "-m", str(out),
        "--no-classical", "--latency-samples", "5", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((bench / "report.json").read_text())["systems"]
    assert rows[0]["name"] == "tuned all-MiniLM-L6-v2 (full)"
    assert rows[1]["name"] == f"tuned {tiny_llama.name} (qlora, generate)"
    assert all(r["kind"] == "tuned" and r["metrics"]["n"] == 60 and r["throughput_qps"] > 0 for r in rows)
    assert rows[1]["metrics"]["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"], abs=2 / 60)
    assert f"| tuned {tiny_llama.name} (qlora, generate) |" in (bench / "report.md").read_text()

    # `switchboard serve` routes with it: an intent of the label set, the route map's route
    server = Server(out, f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "server")
    try:
        server.ensure_running()
        with server.client() as client:
            one = (
                client.post("/v1/route", json={"text": "why is my bill higher " * 30})
                .raise_for_status()
                .json()
            )
            batch = client.post("/v1/route/batch", json={"texts": ["no signal", "cancel my plan"]}).json()
        assert one["intent"] in prompt.labels
        probs = [a["probability"] for a in one["alternatives"]]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
        assert all(r["intent"] in prompt.labels for r in batch["results"])
    finally:
        server.stop()
