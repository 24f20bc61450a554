"""Training speed and memory of the production recipes on the real Llama-3.2-1B architecture (GPU):
the classification head (configs/llama-3.2-1b-qlora.yaml) and instruction fine-tuning with TRL
(configs/llama-3.2-1b-qlora-generate.yaml), each as QLoRA (4-bit NF4 base) and as LoRA on a bf16 base.

Run (GPU):   python benchmarks/qlora_gpu.py           -> benchmarks/results/qlora_gpu.json and the
                                                         "QLoRA on GPU" section of docs/BENCHMARKS.md
Smoke (CPU): python benchmarks/qlora_gpu.py --tiny    -> checks the script; writes nothing to docs
Report:      python benchmarks/qlora_gpu.py --report-only [--results FILE]

No weights can be downloaded here, so the model is Llama-3.2-1B's exact configuration with random
weights: speed and memory depend on the shapes, not the values (accuracy would mean nothing and is
not reported). Texts are Banking77's (train split; validation and test cut to a few per intent so
that the export's evaluation stays short), tokenized by a byte-level BPE tokenizer trained on the
project's sample queries (the tests' recipe, `training.tiny_models`), so query lengths are
realistic; the generative prompt lists all 77 intents, as in production. Every row trains on the
same number of examples (`--examples`), with each preset's batch size and accumulation.
Results are written after every row, so a run stopped early keeps the rows it finished.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.markdown import cpu_name, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "qlora_gpu.json"
PRESETS = {
    "classify": REPO / "configs" / "llama-3.2-1b-qlora.yaml",
    "generate": REPO / "configs" / "llama-3.2-1b-qlora-generate.yaml",
}
LLAMA_32_1B = {  # meta-llama/Llama-3.2-1B config.json
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "vocab_size": 128256,
}


def build_base(path: Path, tiny: bool) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.tiny_models import build_tiny_llama, dataset_texts  # the tests' tokenizer recipe

    # tokenizer + tiny model (trained on the sample texts, as in the tests); replaced below unless --tiny
    build_tiny_llama(path, dataset_texts(REPO / "data" / "sample"))
    if tiny:
        return path
    config = LlamaConfig.from_pretrained(path)
    for key, value in LLAMA_32_1B.items():
        setattr(config, key, value)
    config.architectures = ["LlamaForCausalLM"]
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # random init is faster there
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    del model
    return path


def bench_dataset(source: Path, dest: Path, eval_per_intent: int) -> Path:
    """The source's train split whole; its test split cut to `eval_per_intent` texts per intent
    (the export evaluates validation and test, which is not what is measured here)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "categories.json", "routes.yaml"):
        if (source / name).exists():
            (dest / name).write_bytes((source / name).read_bytes())
    with (source / "test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept: dict[str, int] = defaultdict(int)
    with (dest / "test.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        label = "category" if "category" in rows[0] else "label"
        for row in rows:
            if kept[row[label]] < eval_per_intent:
                kept[row[label]] += 1
                writer.writerow(row)
    return dest


def measure(
    base: Path,
    dataset: Path,
    objective: str,
    method: str,
    examples: int,
    validation_fraction: float,
    tiny: bool,
) -> dict[str, Any]:
    import torch

    from training.config import load_config
    from training.train import train

    preset = load_config(PRESETS[objective])
    per_step = preset.optim.batch_size * preset.optim.gradient_accumulation
    if tiny:  # the smoke test: small batches, no accumulation, 8 examples' worth of steps
        per_step, batch_overrides = 4, ["optim.batch_size=4", "optim.gradient_accumulation=1"]
    else:
        batch_overrides = []
    steps = max(1, examples // per_step)
    out = base.parent / f"out-{objective}-{method}"
    cfg = load_config(
        PRESETS[objective],
        [
            f"model.base_model={base}",
            f"model.method={method}",
            f"data.dataset={dataset}",
            f"data.validation_fraction={validation_fraction}",
            f"optim.max_steps={steps}",
            "optim.evals_per_epoch=1",
            "optim.early_stopping_patience=0",
            *batch_overrides,
            f"output_dir={out}",
        ],
    )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    metrics = train(cfg, progress=True).metrics
    total = time.perf_counter() - started
    facts = metrics["training"]
    loop = facts["train_loop_seconds"]
    return {
        "objective": objective,
        "method": method,
        "steps": facts["global_steps"],
        "batch_size": cfg.optim.batch_size,
        "gradient_accumulation": cfg.optim.gradient_accumulation,
        "train_examples_seen": facts["global_steps"] * per_step,
        # non-pad tokens through the training loop (Trainer's count) over the loop's wall time
        "input_tokens_seen": facts["input_tokens_seen"],
        "tokens_per_example": round(facts["input_tokens_seen"] / max(1, facts["global_steps"] * per_step), 1),
        "train_loop_seconds": loop,
        "train_tokens_per_s": round(facts["input_tokens_seen"] / loop, 1) if loop else None,
        "train_examples_per_s": round(facts["global_steps"] * per_step / loop, 2) if loop else None,
        # model load + training (the peak is read when training ends, before the merge)
        "train_seconds": facts["train_seconds"],
        "export_and_evaluate_seconds": round(total - facts["train_seconds"], 1),
        "evaluated_texts": facts["validation_examples"] + facts["test_examples"],
        "peak_gpu_memory_mib": facts["peak_memory_mb"] if torch.cuda.is_available() else None,
        "device": facts["device"],
    }


def command_args(argv: list[str]) -> list[str]:
    """The run's arguments without where its results went (a machine's own path)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--results"):
            skip = arg == "--results"
            continue
        out.append(arg)
    return out


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "absent"
    return found


def report(results: dict[str, Any]) -> None:
    rows = results["rows"]
    lines = [
        "| objective | method | batch × accumulation | steps | tokens/example | training tokens/s "
        "| examples/s | peak GPU memory | load + train s | merge + export + evaluate s | run |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    runs: list[str] = []
    for r in rows:
        run = r.get("run", results)
        key = f"`{run['command']}` on {run['device']}, {run['date']}"
        if key not in runs:
            runs.append(key)
        lines.append(
            f"| {r['objective']} | {r['method']} | {r['batch_size']} × {r['gradient_accumulation']} "
            f"| {r['steps']} | {r['tokens_per_example']:,.0f} | {r['train_tokens_per_s']:,.0f} "
            f"| {r['train_examples_per_s']:,.1f} | {r['peak_gpu_memory_mib'] / 1024:.2f} GiB "
            f"| {r['train_seconds']:.0f} | {r['export_and_evaluate_seconds']:.0f} "
            f"({r['evaluated_texts']} texts) | {runs.index(key) + 1} |"
        )
    v = results["versions"]
    body = (
        "Runs: "
        + "; ".join(f"({i}) {run}" for i, run in enumerate(runs, 1))
        + f". Host CPU: {results['host_cpu']}; torch {v['torch']}, transformers {v['transformers']}, "
        f"peft {v['peft']}, TRL {v['trl']}, bitsandbytes {v['bitsandbytes']}.\n\n"
        "Random weights in the exact Llama-3.2-1B shapes (1.24B parameters); the presets "
        "`configs/llama-3.2-1b-qlora.yaml` (classification head) and "
        "`configs/llama-3.2-1b-qlora-generate.yaml` (TRL SFT, the prompt listing Banking77's 77 intents), "
        "with `model.method` as shown: `qlora` is the 4-bit NF4 base (double quantization) with the "
        "8-bit paged AdamW, `lora` the bf16 base; LoRA r=16 on all linear layers in both. Each row trains "
        "on `--examples` Banking77 training queries (steps × batch × accumulation). Tokens are the non-pad "
        "tokens the trainer saw (for `generate`: instruction + query + answer, in the tests' BPE tokenizer, "
        "not Llama 3's), over the training loop's wall time, which includes one validation pass at the "
        "end; peak memory is PyTorch's peak allocation when training ends. Accuracy is not reported: the "
        "weights are random.\n\n" + "\n".join(lines) + "\n"
    )
    by = {(r["objective"], r["method"]): r for r in rows}
    if ("classify", "qlora") in by and ("generate", "qlora") in by:
        c, g = by[("classify", "qlora")], by[("generate", "qlora")]
        body += (
            f"\nPer training example, QLoRA: `generate` processes "
            f"{g['tokens_per_example'] / c['tokens_per_example']:.0f}× the tokens of the head "
            f"({g['tokens_per_example']:,.0f} vs {c['tokens_per_example']:,.0f}), trains "
            f"{c['train_examples_per_s'] / g['train_examples_per_s']:.1f}× slower "
            f"({g['train_examples_per_s']:,.1f} vs {c['train_examples_per_s']:,.1f} examples/s) and needs "
            f"{g['peak_gpu_memory_mib'] / c['peak_gpu_memory_mib']:.1f}× the memory.\n"
        )
    for objective in ("classify", "generate"):
        if (objective, "qlora") in by and (objective, "lora") in by:
            q, lo = by[(objective, "qlora")], by[(objective, "lora")]
            body += (
                f"\n`{objective}`: QLoRA's peak memory is "
                f"{q['peak_gpu_memory_mib'] / lo['peak_gpu_memory_mib']:.0%} of LoRA on bf16 "
                f"({q['peak_gpu_memory_mib'] / 1024:.2f} vs {lo['peak_gpu_memory_mib'] / 1024:.2f} GiB), "
                f"at {q['train_examples_per_s'] / lo['train_examples_per_s']:.0%} of its speed.\n"
            )
    measured = {(r["objective"], r["method"]) for r in rows}
    missing = [f"{o}/{m}" for o, m in results.get("planned", []) if (o, m) not in measured]
    if missing:
        body += f"\nNot measured (the runs ended before them): {', '.join(missing)}.\n"
    for note in results.get("notes", []):
        body += f"\n- {note}"
    body += "\n" if results.get("notes") else ""
    replace_section(
        REPO / "docs" / "BENCHMARKS.md", "qlora-gpu", "QLoRA on GPU: Llama-3.2-1B architecture", body
    )


def merge(files: list[Path], notes: list[str]) -> dict[str, Any]:
    """Several runs' results as one: each row keeps its run's command, device and date; a later
    file's row replaces an earlier one of the same objective and method."""
    merged: dict[str, Any] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for file in files:
        results = json.loads(file.read_text())
        run = {k: results[k] for k in ("command", "device", "date")}
        for row in results["rows"]:
            rows[(row["objective"], row["method"])] = {**row, "run": row.get("run", run)}
        merged = {**merged, **{k: v for k, v in results.items() if k not in ("rows", "notes")}}
        merged["planned"] = sorted({*map(tuple, merged.get("planned", [])), *map(tuple, results["planned"])})
    merged["rows"] = list(rows.values())
    merged["notes"] = notes
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: a smoke test of this script")
    parser.add_argument("--objectives", default="classify,generate")
    parser.add_argument("--methods", default="qlora,lora")
    parser.add_argument("--examples", type=int, default=1920, help="training examples per row")
    parser.add_argument("--eval-per-intent", type=int, default=2, help="test texts kept per intent")
    parser.add_argument("--validation-fraction", type=float, default=0.02)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="rewrite the docs section from --results")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="results files of several runs -> --results, and the docs"
    )
    parser.add_argument("--note", action="append", default=[], help="a remark for the report (with --merge)")
    args = parser.parse_args()
    if args.merge:
        args.results.write_text(json.dumps(merge(args.merge, args.note), indent=2) + "\n")
    if args.report_only or args.merge:
        report(json.loads(args.results.read_text()))
        return
    import torch

    data_dir = Path(os.environ.get("SWITCHBOARD_DATA_DIR", str(REPO.parent / "shared" / "datasets")))
    source = data_dir / "banking77" if (data_dir / "banking77").is_dir() else REPO / "data" / "sample"
    planned = [(o, m) for m in args.methods.split(",") for o in args.objectives.split(",")]
    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/qlora_gpu.py", *command_args(sys.argv[1:])]),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "host_cpu": cpu_name(),
        "date": time.strftime("%Y-%m-%d"),
        "versions": versions(),
        "dataset": source.name,
        "examples": 8 if args.tiny else args.examples,
        "planned": planned,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = build_base(Path(tmp) / "base", args.tiny)
        dataset = bench_dataset(source, Path(tmp) / source.name, args.eval_per_intent)
        for objective, method in planned:
            row = measure(
                base, dataset, objective, method, results["examples"], args.validation_fraction, args.tiny
            )
            print(json.dumps(row, indent=2), flush=True)
            results["rows"].append(row)
            if not args.tiny:
                args.results.parent.mkdir(parents=True, exist_ok=True)
                args.results.write_text(json.dumps(results, indent=2) + "\n")
    if not args.tiny:
        report(results)


if __name__ == "__main__":
    main()
