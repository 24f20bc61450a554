"""Training benchmark: the CPU default (MiniLM, LP-FT) on Banking77 and CLINC150 vs. baselines.

Run:  make bench-train     (or: .venv/bin/python benchmarks/train.py [--datasets banking77])

For each dataset, in one run on this machine:
1. the embeddings + logistic-regression and TF-IDF + logistic-regression baselines;
2. `switchboard train` with configs/minilm-cpu.yaml (a subprocess, so its peak memory is its own);
3. `switchboard check-vllm` on the exported model: vLLM vs. transformers agreement on the test set.
Writes benchmarks/results/train.json and the "Training" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from training.formatting import pct

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "train.json"
DOC = REPO / "docs" / "BENCHMARKS.md"
PRESET = "configs/minilm-cpu.yaml"
# CLINC150 has 1.7x Banking77's examples but shorter texts: fewer epochs keep it near 20 min
OVERRIDES = {"banking77": [], "clinc150": ["optim.epochs=4"]}
TARGETS = {
    "banking77": "test accuracy >= 94.0% and above the embeddings baseline",
    "clinc150": "in-scope accuracy >= 96% and out-of-scope recall >= 70%",
}


def _cli(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a `switchboard` command; its output streams through unless `capture` (for JSON)."""
    cmd = [sys.executable, "-m", "router.cli", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    done = subprocess.run(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE if capture else None)
    if done.returncode not in (0, 1):
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(args)}")
    return done


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "macro_f1", "ece", "in_scope_accuracy")
    out = {k: metrics[k] for k in keys if metrics.get(k) is not None}
    if "oos" in metrics:
        out["oos_recall"] = metrics["oos"]["recall"]
        out["oos_precision"] = metrics["oos"]["precision"]
    return out


def reevaluate(model_dir: Path, data: Any) -> None:
    """Recompute metrics.json of a model this script trained earlier, with the current evaluation
    code; the training facts (time, memory) stay those of the run that trained it."""
    from training.export import write_json
    from training.modeling import load_classifier
    from training.train import evaluate_export

    previous = json.loads((model_dir / "metrics.json").read_text())
    model, tokenizer = load_classifier(model_dir)
    metrics = evaluate_export(model, tokenizer, data, model_dir, max_length=64)
    metrics["training"] = {**previous["training"], "reevaluated": time.strftime("%Y-%m-%d %H:%M")}
    write_json(model_dir / "metrics.json", metrics)


def bench_dataset(name: str, out_root: Path, reuse: bool = False) -> dict[str, Any]:
    from training.baselines.classical import run_baseline
    from training.data import load_dataset

    data = load_dataset(name)
    result: dict[str, Any] = {
        "dataset": name,
        "command": f"python benchmarks/train.py --datasets {name}" + (" --reuse-models" if reuse else ""),
        "test_examples": len(data.test or []),
        "systems": {},
    }
    for kind in ("embeddings", "tfidf"):
        base = run_baseline(kind, data, progress=True)
        result["systems"][base.name] = {
            **_headline(base.metrics),
            "train_seconds": round(base.fit_seconds, 1),
        }
        print(f"{name}: {base.name}: accuracy {base.metrics['accuracy']:.4f}", flush=True)

    model_dir = out_root / f"minilm-{name}"
    started = time.perf_counter()
    if reuse and (model_dir / "metrics.json").is_file():
        reevaluate(model_dir, data)
    else:
        _cli("train", "--config", PRESET, "--dataset", name, "--output", str(model_dir), *OVERRIDES[name])
    wall = time.perf_counter() - started
    metrics = json.loads((model_dir / "metrics.json").read_text())
    facts = metrics["training"]
    result["systems"]["MiniLM-L6 fine-tuned (LP-FT, mean pooling)"] = {
        **_headline(metrics["test"]),
        "train_seconds": facts["train_seconds"],
        "command_seconds": round(wall, 1),
        "reevaluated": facts.get("reevaluated"),
        "peak_memory_mb": facts["peak_memory_mb"],
        "steps": facts["global_steps"],
        "model_dir": str(model_dir),
    }
    if "with_oos_threshold" in metrics["test"]:  # the operating point the router uses
        point = metrics["test"]["with_oos_threshold"]
        tau = metrics["oos_threshold"]["threshold"]
        result["systems"][f"  + OOS threshold {tau:.2f} (chosen on validation: max OOS-F1)"] = {
            **_headline(point),
            "train_seconds": facts["train_seconds"],
            "peak_memory_mb": facts["peak_memory_mb"],
        }
    check = _cli("check-vllm", str(model_dir), "--dataset", name, capture=True)
    result["vllm_agreement"] = json.loads(check.stdout.strip().splitlines()[-1])
    return result


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        machine_line(results["machine"]),
        "",
        f"Fine-tuned model: `{PRESET}` "
        "(all-MiniLM-L6-v2, mean pooling, linear-probe head init then full fine-tuning, cosine "
        "schedule, best epoch by validation macro-F1). Baselines fit on train + validation.",
        "",
    ]
    for ds in results["datasets"]:
        oos = ds["dataset"] == "clinc150"
        lines += [
            f"**{ds['dataset']}** ({ds['test_examples']} test queries; target: {TARGETS[ds['dataset']]}; "
            f"command: `{ds['command']}`)",
            "",
        ]
        head = "| system | accuracy | macro-F1 |" + (" in-scope acc. | OOS recall |" if oos else "")
        head += " ECE | train time | peak RSS |"
        lines += [head, "|" + " --- |" * (head.count("|") - 1)]
        for system, row in ds["systems"].items():
            cells = [system, pct(row.get("accuracy")), pct(row.get("macro_f1"))]
            if oos:
                cells += [pct(row.get("in_scope_accuracy")), pct(row.get("oos_recall"))]
            cells += [
                f"{row['ece']:.3f}",
                f"{row['train_seconds'] / 60:.1f} min",
                f"{row['peak_memory_mb'] / 1024:.1f} GiB" if "peak_memory_mb" in row else "n/a",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        agree = ds["vllm_agreement"]
        redone = [row["reevaluated"] for row in ds["systems"].values() if row.get("reevaluated")]
        if redone:
            lines += [
                "",
                f"The fine-tuned model's metrics were recomputed on {redone[0]} from its exported weights "
                "(`--reuse-models`: the out-of-scope threshold rule changed after training); its train time "
                "and memory are those of the run that trained it.",
            ]
        lines += [
            "",
            f"vLLM (`runner=pooling`, dtype {agree['vllm_dtype']}) vs. transformers on the exported model: "
            f"argmax agreement {pct(agree['agreement'])} ({agree['disagreements']} of {agree['n']} differ), "
            f"max |Δp| {agree['max_abs_prob_diff']:.4f}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["banking77", "clinc150"], choices=list(TARGETS))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    parser.add_argument(
        "--reuse-models",
        action="store_true",
        help="re-evaluate models this script already trained (current evaluation code) instead of retraining",
    )
    args = parser.parse_args()
    use_local_datasets()

    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    kept = [d for d in previous.get("datasets", []) if d["dataset"] not in args.datasets]
    results: dict[str, Any] = {
        "command": "python benchmarks/train.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        # datasets benchmarked earlier on the same machine stay; the ones run now are replaced
        "datasets": kept + [bench_dataset(name, args.out, args.reuse_models) for name in args.datasets],
    }
    results["datasets"].sort(key=lambda d: list(TARGETS).index(d["dataset"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(DOC, "training", "Training: CPU default vs. classical baselines", to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
