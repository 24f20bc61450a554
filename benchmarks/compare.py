"""Comparison benchmark: the tuned CPU default against the classical baselines, and against few-shot
LLMs with a cascade where one is reachable, on Banking77 and CLINC150.

Run (after `make bench-train`, which writes the tuned models):
    .venv/bin/python benchmarks/compare.py
    .venv/bin/python benchmarks/compare.py --fewshot-model gpt-4o-mini        # with OPENAI_API_KEY
    .venv/bin/python benchmarks/compare.py --fewshot-model my-llm --base-url http://localhost:8000/v1

For each dataset this is `switchboard bench` (training/comparison): every system on the same test split,
the tuned model through vLLM offline classify with its throughput measured here, cost per 1M
queries from that throughput and the hourly price in data/prices.yaml (or --hardware-price-per-hour).
Writes runs/compare/<dataset>/report.{md,json} + pictures, benchmarks/results/compare.json, the
pictures under docs/images/, and the "Comparison" section of docs/BENCHMARKS.md. Published few-shot
figures appear in a table of their own, never mixed with what was measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "compare.json"
DOC = REPO / "docs" / "BENCHMARKS.md"
IMAGES = REPO / "docs" / "images"
DATASETS = ("banking77", "clinc150")

#: Few-shot results others measured, with their source. Shown apart from anything measured here.
PUBLISHED: dict[str, list[dict[str, str]]] = {
    "banking77": [
        {"system": "GPT-4", "setting": "3-shot", "score": "83.1%"},
        {"system": "GPT-3.5", "setting": "1-shot", "score": "75.2%"},
    ],
}
PUBLISHED_SOURCE = (
    'Loukas et al. 2023, "Making LLMs Worth Every Penny: Resource-Limited Text Classification in '
    "Banking\" (ICAIF '23), https://arxiv.org/abs/2311.06102"
)


def _published_table(dataset: str) -> list[str]:
    rows = PUBLISHED.get(dataset)
    if not rows:
        return []
    lines = [
        f"**Published, not measured here** ({dataset}): few-shot figures from {PUBLISHED_SOURCE}. "
        "Their prompts, example selection and evaluation protocol, not this repository's; no cost or "
        "latency of ours attaches to them.",
        "",
        "| system (published) | setting | reported score |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {r['system']} | {r['setting']} | {r['score']} |" for r in rows]
    return [*lines, ""]


def _copy_pictures(dataset: str, out: Path, pictures: dict[str, str]) -> dict[str, str]:
    """The report's PNGs next to docs/BENCHMARKS.md (runs/ is not committed)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    copied = {}
    for name, file in pictures.items():
        target = IMAGES / f"compare-{dataset}-{file}"
        shutil.copyfile(out / file, target)
        copied[name] = f"images/{target.name}"
    return copied


def to_markdown(results: dict[str, Any]) -> str:
    from training.comparison.report import cascade_table, systems_table

    before, after = results["machine"]["load_average_1min"]
    lines = [
        machine_line(results["machine"]) + f" 1-minute load average {before:g} before, {after:g} after "
        f"the run (on {results['machine']['cores']} cores; other work slows the measured throughput).",
        "",
        f"Command: `{results['command']}` (each dataset is `switchboard bench`). The tuned model is the "
        "one `benchmarks/train.py` exported, served through vLLM offline classify; baselines fit on train "
        "+ validation. Cost per 1M queries of the tuned model and the baselines = 1M / throughput measured "
        f"here x ${results['hardware']['price_per_hour']:g}/hour ({results['hardware']['priced_as']}), "
        "i.e. at full utilisation; one-off training = training time x the same price. Few-shot LLM costs "
        "come from token usage x data/prices.yaml.",
        "",
    ]
    for ds in results["datasets"]:
        report = ds["report"]
        systems = report["systems_objects"]
        lines += [f"### {ds['dataset']} ({report['n']} test queries)", ""]
        lines.append(systems_table(systems, has_oos=ds["has_oos"]))
        lines += [f"- {s.name}: " + "; ".join(s.notes) for s in systems if s.notes] + [""]
        for sweep in report["sweep_objects"]:
            lines += [
                f"Cascade, escalating to {sweep.fallback}:",
                "",
                cascade_table(sweep, has_oos=ds["has_oos"]),
            ]
        if not report["fewshot_models"]:
            lines += [
                "Few-shot LLMs and the cascade: **not measured in this run** (no API key and no network on "
                "this machine). `--fewshot-model gpt-4o-mini` with `OPENAI_API_KEY` set, or `--base-url` "
                "for any OpenAI-compatible server, adds them.",
                "",
                *_published_table(ds["dataset"]),
            ]
        lines += [f"![{name}]({path})" for name, path in ds["pictures"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    for name in DATASETS:
        parser.add_argument(
            f"--model-dir-{name}", type=Path, default=REPO / "runs" / "bench" / f"minilm-{name}",
            help=f"tuned model for {name} (default: what benchmarks/train.py wrote)",
        )  # fmt: skip
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--fewshot-model", action="append", default=[], help="repeat for several")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--shots", type=int, default=None)
    parser.add_argument("--selection", choices=["per-class", "nearest"], default="per-class")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test queries")
    parser.add_argument("--hardware-price-per-hour", type=float, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "compare")
    args = parser.parse_args()
    use_local_datasets()

    from training.baselines.fewshot import FewShotConfig
    from training.comparison import BenchConfig, run_bench

    results: dict[str, Any] = {
        "command": "python benchmarks/compare.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "datasets": [],
    }
    load_before = os.getloadavg()[0]
    for name in args.datasets:
        model_dir = getattr(args, f"model_dir_{name}")
        if not (model_dir / "config.json").is_file():
            raise SystemExit(
                f"{name}: no tuned model at {model_dir} (run `make bench-train` or pass --model-dir-{name})"
            )
        out = args.out / name
        fewshot = FewShotConfig(model="", base_url=args.base_url, shots=args.shots, selection=args.selection)
        report = run_bench(
            BenchConfig(
                dataset=name, output=out, model_dirs=(model_dir,), engine=args.engine,
                fewshot_models=tuple(args.fewshot_model),
                fewshot=fewshot,
                limit=args.limit, hardware_price_per_hour=args.hardware_price_per_hour,
            )
        )  # fmt: skip
        print((out / "report.md").read_text(), flush=True)
        results["hardware"] = report.hardware.__dict__
        results["datasets"].append(
            {
                "dataset": name,
                "has_oos": report.has_oos,
                "report_dir": str(out.relative_to(REPO) if out.is_relative_to(REPO) else out),
                "pictures": _copy_pictures(name, out, report.pictures),
                "report": {
                    **report.to_json(),
                    "fewshot_models": list(args.fewshot_model),
                    "systems_objects": report.systems,
                    "sweep_objects": report.sweeps,
                },
            }
        )

    # throughput (hence cost) is only as good as the machine was quiet: say how busy it was
    results["machine"]["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    markdown = to_markdown(results)
    for ds in results["datasets"]:  # the dataclasses were for the markdown only
        ds["report"].pop("systems_objects")
        ds["report"].pop("sweep_objects")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(DOC, "comparison", "Comparison: tuned model vs. baselines and few-shot LLMs", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
