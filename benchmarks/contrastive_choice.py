"""How the contrastive stage's defaults were chosen: on a validation pool, never on a test split.

Run: python benchmarks/contrastive_choice.py [--dataset banking77] [--seed 42]

The few-shot start's data (`--per-intent` examples per intent from the training split, as
benchmarks/few_shot.py and the learning loop's cold start draw them) and its validation pool
(`--pool` other texts of the training split). Each variant trains a fresh MiniLM body with the
stage (training.contrastive) on the labelled texts; a logistic regression on the frozen,
normalised embeddings of the labelled texts then scores the pool. The probe is what the stage
changes (the body), at a fraction of a full training's cost; `few_shot.py` measures the whole
`switchboard train` with the default chosen here.

Results: benchmarks/results/contrastive_choice.json and the "Contrastive stage: the choice"
section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.loop_data import load, per_intent  # noqa: E402
from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "contrastive_choice.json"
# (loss, rounds, learning rate, batch size); None: no contrastive stage
VARIANTS: list[tuple[str, int, float, int] | None] = [
    None,
    ("in_batch", 2, 2e-5, 32),
    ("pairs", 2, 2e-5, 32),
    ("in_batch", 4, 2e-5, 32),
    ("in_batch", 2, 5e-5, 32),
    ("in_batch", 4, 5e-5, 32),
    ("in_batch", 8, 2e-5, 32),
    ("in_batch", 4, 2e-5, 64),
]


def name_of(variant: tuple[str, int, float, int] | None) -> str:
    if variant is None:
        return "none"
    loss, rounds, lr, batch = variant
    return f"{loss}, {rounds} rounds, lr {lr:g}, batch {batch}"


def main() -> None:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from training.config import ModelConfig, QuantizationSettings
    from training.contrastive import contrastive_body
    from training.data import LabelMap
    from training.mean_pool_bert import masked_mean
    from training.modeling import build_classifier

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--per-intent", type=int, default=10)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--first", type=int, default=len(VARIANTS), help="run only the first N variants")
    args = parser.parse_args()

    data = load(args.dataset)
    rows, rest = per_intent(data.train, args.per_intent, args.seed)
    pool = rest[:]
    random.Random(args.seed).shuffle(pool)  # the same pool as benchmarks/few_shot.py's
    pool = pool[: args.pool]
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    built = build_classifier(ModelConfig(), QuantizationSettings(), LabelMap(sorted(set(labels))))
    body = built.model.bert
    pretrained = copy.deepcopy(body.state_dict())

    def embed(batch_texts: list[str]) -> Any:
        out = []
        with torch.no_grad():
            for i in range(0, len(batch_texts), 256):
                enc = built.tokenizer(batch_texts[i : i + 256], padding=True, truncation=True, max_length=64,
                                      return_tensors="pt")  # fmt: skip
                hidden = body(**enc).last_hidden_state
                out.append(torch.nn.functional.normalize(masked_mean(hidden, enc["attention_mask"]), dim=-1))
        return torch.cat(out).numpy()

    results = []
    for variant in VARIANTS[: args.first]:
        body.load_state_dict(pretrained)
        started = time.perf_counter()
        stage = None
        if variant is not None:
            loss, rounds, lr, batch = variant
            stage = contrastive_body(body, built.base_path, texts, labels, loss=loss,  # type: ignore[arg-type]
                                     rounds=rounds, learning_rate=lr, batch_size=batch, seed=args.seed,
                                     progress=False).to_json()  # fmt: skip
        probe = LogisticRegression(C=10.0, max_iter=2000).fit(embed(texts), labels)
        accuracy = float(
            (probe.predict(embed([t for t, _ in pool])) == np.array([y for _, y in pool])).mean()
        )
        seconds = round(time.perf_counter() - started, 1)
        row = {"variant": name_of(variant), "pool_accuracy": round(100 * accuracy, 2), "stage": stage}
        results.append({**row, "seconds": seconds})
        print(json.dumps(results[-1]), flush=True)
    result = {
        "machine": machine_info(), "dataset": data.name, "seed": args.seed, "per_intent": args.per_intent,
        "pool": len(pool), "variants": results,
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    se = 100 * (0.85 * 0.15 / len(pool)) ** 0.5
    lines = [
        f"Command: `python benchmarks/contrastive_choice.py --dataset {data.name} --seed {args.seed}"
        f"{f' --first {args.first}' if args.first < len(VARIANTS) else ''}`. "
        f"{machine_line(result['machine'])}",
        "",
        f"{args.per_intent} labelled examples per intent; a logistic regression on the frozen body's "
        f"embeddings scores a validation pool of {len(pool)} other training-split texts (the test split "
        f"is not read). One pool: its standard error is about {se:.1f} points, so variants within a "
        "point of each other are not told apart; the default is the best measured.",
        "",
        "| contrastive stage | validation pool | steps | seconds |",
        "|---|---|---|---|",
        *(
            f"| {r['variant']} | {r['pool_accuracy']:.2f}% | {(r['stage'] or {}).get('steps', 0)} | "
            f"{r['seconds']:.0f} |"
            for r in results
        ),
    ]
    replace_section(REPO / "docs" / "BENCHMARKS.md", "contrastive-choice", "Contrastive stage: the choice",
                    "\n".join(lines))  # fmt: skip
    print(f"wrote {RESULTS} and docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
