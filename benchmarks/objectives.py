"""Objectives head to head: classification head vs. generated labels (TRL SFT), same base/data/seed.

Run:  .venv/bin/python benchmarks/objectives.py                       (tiny random Llama, CPU)
      .venv/bin/python benchmarks/objectives.py --base meta-llama/Llama-3.2-1B --dataset banking77 \\
          --epochs 3 --method qlora                                    (real weights, GPU)

For each objective, on the same base model, dataset, seed, method and LoRA settings:
1. `switchboard train` (a subprocess, so its peak memory is its own): test accuracy, macro-F1 and
   ECE (transformers, exported weights), training time and peak memory from `metrics.json`;
2. vLLM on the export (the serving path): batched throughput over the test split and one-query
   latency; for `generate` also the engine requests and prompt tokens per query (the cost of
   scoring every label's tokens instead of one forward pass).
Without `--base` it builds the tiny random Llama of the tests (no download): the code path runs,
the accuracy numbers mean nothing. Writes benchmarks/results/objectives.json and the "Objectives"
section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "objectives.json"
DOC = REPO / "docs" / "BENCHMARKS.md"
OBJECTIVES = ("classify", "generate")


def _train(objective: str, args: argparse.Namespace, base: str, out: Path) -> dict[str, Any]:
    overrides = [
        f"model.base_model={base}",
        f"model.objective={objective}",
        f"model.method={args.method}",
        f"model.max_length={args.max_length}",
        f"optim.batch_size={args.batch_size}",
        f"optim.learning_rate={args.learning_rate}",
        f"optim.seed={args.seed}",
        f"data.seed={args.seed}",
        "optim.head_learning_rate=null",
        "optim.head_init=random",
        "lora.r=8",
        "lora.alpha=16",
    ]
    overrides += (
        [f"optim.max_steps={args.max_steps}"] if args.max_steps > 0 else [f"optim.epochs={args.epochs}"]
    )
    cmd = [sys.executable, "-m", "router.cli", "train", "--config", "configs/llama-3.2-1b-qlora.yaml"]
    cmd += ["--dataset", args.dataset, "--output", str(out), "--no-progress", *overrides]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{objective}: train failed\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    test, training = metrics["test"], metrics["training"]
    return {
        "accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
        "ece": test["ece"],
        "train_seconds": training["train_seconds"],
        "train_wall_seconds": round(time.perf_counter() - started, 1),
        "global_steps": training["global_steps"],
        "peak_memory_mb": training["peak_memory_mb"],
        "device": training["device"],
    }


def _serve(model_dir: Path, texts: list[str], latency_samples: int) -> dict[str, Any]:
    import numpy as np

    from serving.label_scoring import LabelTrie, PromptTokens, is_generative, read_intent_prompt
    from serving.offline import classify_texts, close_llm, open_llm

    generative = is_generative(model_dir)
    if generative:
        from serving.generative import open_generative_llm, score_texts

        llm = open_generative_llm(model_dir)

        def run(batch: list[str]) -> Any:
            return score_texts(llm, model_dir, batch)
    else:
        llm = open_llm(model_dir, max_model_len=72)

        def run(batch: list[str]) -> Any:
            return classify_texts(llm, batch, max_length=64)

    try:
        dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
        run(texts[:16])  # warm-up
        started = time.perf_counter()
        run(texts)
        batch_s = time.perf_counter() - started
        latencies = []
        for text in texts[:latency_samples]:
            started = time.perf_counter()
            run([text])
            latencies.append(time.perf_counter() - started)
        cost: dict[str, Any] = {"requests_per_query": 1}
        if generative:
            prompt = read_intent_prompt(model_dir)
            assert prompt is not None
            tokens = PromptTokens(prompt, llm.get_tokenizer())
            trie = LabelTrie(tokens.label_ids)
            lengths = [len(tokens.prompt_ids(t)) for t in texts]
            per_query = [trie.tokens_per_query(n) for n in lengths]
            cost = {
                "requests_per_query": len(trie.nodes),
                "instruction_tokens": len(tokens.prefix_ids),
                "mean_prompt_tokens": round(float(np.mean(lengths)), 1),
                "mean_tokens_per_query_uncached": round(float(np.mean(per_query)), 1),
            }
    finally:
        close_llm(llm)
    return {
        "vllm_dtype": dtype,
        "throughput_qps": round(len(texts) / batch_s, 2),
        "latency_p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
        "latency_p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1),
        **cost,
    }


def _doc(report: dict[str, Any]) -> str:
    rows = [
        "| objective | accuracy | macro-F1 | ECE | train s | peak MB | vLLM q/s | p50 ms | p99 ms "
        "| requests/query | tokens/query |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report["objectives"].items():
        tokens = r.get("mean_tokens_per_query_uncached", r.get("mean_prompt_tokens", "query only"))
        rows.append(
            f"| {name} | {100 * r['accuracy']:.1f}% | {100 * r['macro_f1']:.1f}% | {r['ece']:.3f} "
            f"| {r['train_seconds']:.0f} | {r['peak_memory_mb']:.0f} | {r['throughput_qps']:.1f} "
            f"| {r['latency_p50_ms']:.0f} | {r['latency_p99_ms']:.0f} "
            f"| {r['requests_per_query']} | {tokens} |"
        )
    cfg = report["config"]
    what = (
        "the tiny random Llama of the tests (2 layers, hidden 64, a BPE tokenizer trained on the "
        "sample texts): **only the code path is measured; accuracy, F1 and ECE of a random 2-layer "
        "model mean nothing, and speed/memory say nothing about Llama-3.2-1B**"
        if cfg["base"] == "tiny"
        else f"`{cfg['base']}`"
    )
    return "\n".join(
        [
            "Run: `.venv/bin/python benchmarks/objectives.py` (defaults below; `--base`, `--dataset`, "
            "`--epochs` for a real run). Both objectives: same base, data, seed, method and LoRA.",
            "",
            f"Base: {what}. Dataset `{cfg['dataset']}`, method `{cfg['method']}`, "
            + (f"{cfg['max_steps']} steps" if cfg["max_steps"] > 0 else f"{cfg['epochs']} epochs")
            + f", batch {cfg['batch_size']}, seed {cfg['seed']}. "
            + machine_line(report["machine"]),
            "",
            *rows,
            "",
            "Accuracy, macro-F1 and ECE: test split, transformers on the exported weights. Training "
            "time and peak memory: `metrics.json` (CPU: peak RSS of the training process). vLLM: "
            "batched over the test split, latency one query at a time. tokens/query for `generate`: "
            "the prompt tokens of all its engine requests before the prefix cache (the cache then "
            "serves the instruction, shared by every request of every query, in whole KV blocks).",
            "",
            "Cost per query, by construction: the head is one engine request over the query's own "
            "tokens (≤ `max_length`) and one forward pass. `generate` is one request per inner node of "
            "the labels' token trie (`serving/label_scoring.py`; the sample's 10 labels: the "
            "`requests/query` column), each over the instruction listing every intent + the query + "
            "the answer prefix, for one generated position; the instruction grows with the number of "
            "intents and their descriptions (Banking77's 77 intents: hundreds to ~2k tokens).",
            "",
            "**What exists and what needs real weights.** "
            + (
                "Measured here: the table above, on the tiny random Llama on this CPU; it shows that "
                "both objectives train (QLoRA, bitsandbytes 4-bit on CPU), export, and serve in vLLM "
                "end to end, and the per-query cost structure. Training speed and GPU memory of SFT "
                'vs. the head on the Llama-3.2-1B architecture (random weights, an H200): "QLoRA on '
                'GPU" (`benchmarks/qlora_gpu.py`). Not measured (needs the Llama-3.2-1B weights): '
                "accuracy / macro-F1 / ECE of the two objectives on Banking77 or CLINC150; (needs vLLM "
                "on a GPU) throughput/latency of label scoring at 1B scale. The command for the run "
                "with real weights is at the top of this section."
                if cfg["base"] == "tiny"
                else "All numbers above are from the real base model."
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="tiny", help="base causal LM (hub id or dir); tiny: build one")
    parser.add_argument("--dataset", default="data/sample")
    parser.add_argument("--method", default="qlora", choices=["qlora", "lora", "full"])
    parser.add_argument("--max-steps", type=int, default=12, help="> 0: steps instead of epochs")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from training.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="objectives-") as tmp:
        base = args.base
        if base == "tiny":
            from training.tiny_models import build_tiny_llama, dataset_texts

            base = str(build_tiny_llama(Path(tmp) / "tiny-llama", dataset_texts(REPO / "data" / "sample")))
        data = load_dataset(args.dataset)
        assert data.test is not None, "the benchmark needs a test split"
        texts = list(data.test.texts)
        results: dict[str, Any] = {}
        for objective in OBJECTIVES:
            out = Path(tmp) / objective
            results[objective] = _train(objective, args, base, out)
            results[objective].update(_serve(out, texts, args.latency_samples))
            print(objective, json.dumps(results[objective]), flush=True)
    report = {
        "config": {k: getattr(args, k) for k in ("base", "dataset", "method", "max_steps", "epochs", "seed")}
        | {"batch_size": args.batch_size},
        "machine": machine_info(),
        "objectives": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_doc:
        replace_section(
            DOC, "objectives", "Objectives: classification head vs. generated labels", _doc(report)
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
