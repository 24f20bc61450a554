"""Intent-discovery benchmark: can the unrouted traffic propose the intents the taxonomy lacks, and
how few reviewer actions turn them into trained intents? Through the product.

Run:   python benchmarks/discovery.py [--dataset banking77] [--hidden 5] [--per-intent 50]
Smoke: python benchmarks/discovery.py --dataset data/sample --hidden 2 --per-intent 8 --quick

1. The champion is trained (`switchboard train`) on `--per-intent` examples of every intent but
   `--hidden` ones (chosen by seed); the line's test split, which the retrain's gate reads, is
   carved from the training pool of the kept intents (the official test split only reports).
2. `switchboard serve` on its registry; the rest of the training data, all intents, is traffic.
3. `switchboard intents discover` over the window; the proposals are read from `GET /v1/discover`.
   Scored against the true labels: proposals whose majority (purity >= 0.8) is a hidden intent,
   the adjusted Rand index of the clustering (every unrouted text; noise as singletons), and
   proposals whose majority is an existing intent.
4. The reviewer acts through the API, seeing each proposal's members: removes the ones that do
   not belong (one action), then names a proposal of a new hidden intent, merges one of an
   intent already named or existing (each with its members confirmed: one action), or dismisses
   one without a clear majority (one action). A hidden intent still short of
   `--labels-per-new-intent` labels is topped up from the uncertainty queue, one label an action.
   Items looked at: every member shown, every queue item read.
5. `switchboard retrain --promotion direct` (new intents trained once they have `--min-examples`
   labels; the head grows), reload under load (failed requests counted), then the official test
   split: recall on the hidden intents, accuracy on the kept ones before and after.

Resumable: state under `--work/<dataset>-hidden<k>-seed<s>`. Results: benchmarks/results/
discovery.json and the "Intent discovery" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.loop_data import Data, cli, load, per_intent, train_champion, write_dataset  # noqa: E402
from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402
from benchmarks.product_loop import Loop, now_iso  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "discovery.json"
PURE = 0.8  # a proposal "is" its majority intent at this purity (issue 27)
OLD_PATH_ITEMS = 3000  # items read on the uncertainty-queue path of the learning loop's new-intent scenario
GOALS = {"found_share": 0.8, "items_share_of_old_path": 0.2, "new_recall": 0.85, "old_drop_points": 0.5}


def champion_data(data: Data, args: argparse.Namespace) -> tuple[list[str], list, list, list]:
    """(hidden intents, the champion's rows, the gate's holdout, the traffic)."""
    rng = random.Random(args.seed)
    intents = [label for label in data.labels if label != "oos"]
    hidden = sorted(rng.sample(intents, args.hidden))
    kept_rows = [(t, y) for t, y in data.train if y not in hidden]
    rows, rest = per_intent(kept_rows, args.per_intent, args.seed)
    cut = round(len(rest) * args.gate_holdout)
    holdout = rest[:cut]
    traffic = rest[cut:] + [(t, y) for t, y in data.train if y in hidden]
    random.Random(args.seed + 1).shuffle(traffic)
    return hidden, rows, holdout, traffic


def proposals(loop: Loop) -> list[dict[str, Any]]:
    with loop.client() as client:
        listed = client.get("/v1/discover", params={"status": "all"})
        listed.raise_for_status()
        out = []
        for p in listed.json()["proposals"]:
            r = client.get(f"/v1/discover/{p['id']}")
            r.raise_for_status()
            out.append(r.json())
        return out


def score(
    found: list[dict[str, Any]], truth: dict[str, str], hidden: list[str], candidates: int
) -> dict[str, Any]:
    """Purity, majority, hidden intents found, existing-majority proposals, and the ARI."""
    from sklearn.metrics import adjusted_rand_score

    rows = []
    true_of, pred_of = [], []
    for k, p in enumerate(found):
        labels = [truth.get(m["text"], "?") for m in p["member_list"]]
        top, count = Counter(labels).most_common(1)[0]
        rows.append(
            {
                "id": p["id"],
                "size": len(labels),
                "majority": top,
                "purity": round(count / len(labels), 4),
                "hidden": top in hidden,
                "keywords": p["keywords"][:5],
                "nearest_intent": p["nearest_intent"],
                "nearest_similarity": p["nearest_similarity"],
            }
        )
        true_of += labels
        pred_of += [k] * len(labels)
    noise = max(candidates - len(true_of), 0)  # unclustered texts: each its own cluster (unknown truth
    # for the ARI would bias it, so they count as singletons of a label of their own)
    true_all = true_of + [f"noise-{i}" for i in range(noise)]
    pred_all = pred_of + [len(found) + i for i in range(noise)]
    found_hidden = sorted({r["majority"] for r in rows if r["hidden"] and r["purity"] >= PURE})
    return {
        "proposals": rows,
        "hidden_found": found_hidden,
        "hidden_found_count": len(found_hidden),
        "existing_majority": sum(not r["hidden"] for r in rows),
        "ari_clustered": round(adjusted_rand_score(true_of, pred_of), 4) if true_of else None,
        "ari_with_noise": round(adjusted_rand_score(true_all, pred_all), 4) if true_all else None,
        "clustered": len(true_of),
        "candidates": candidates,
    }


def review(
    loop: Loop, found: list[dict[str, Any]], truth: dict[str, str], hidden: list[str], data: Data
) -> dict[str, Any]:
    """The reviewer's actions on the proposals through the API; labels per hidden intent."""
    actions: Counter[str] = Counter()
    looked = 0
    named: set[str] = set()
    labels: Counter[str] = Counter()
    with loop.client() as client:
        for p in found:
            members = [m for m in p["member_list"] if m["state"] == "member"]
            looked += len(members)
            true = [truth.get(m["text"], "?") for m in members]
            top, count = Counter(true).most_common(1)[0]
            if count / max(len(true), 1) < PURE:
                client.post(f"/v1/discover/{p['id']}/dismiss").raise_for_status()
                actions["dismiss"] += 1
                continue
            wrong = [m["request_id"] for m, y in zip(members, true, strict=True) if y != top]
            if wrong:
                r = client.post(f"/v1/discover/{p['id']}/remove", json={"request_ids": wrong})
                r.raise_for_status()
                actions["remove"] += 1
            if top in hidden and top not in named:
                body = {"name": top, "route": data.routes.get(top, "general"), "confirm_members": True}
                r = client.post(f"/v1/discover/{p['id']}/name", json=body)
                r.raise_for_status()
                named.add(top)
                actions["name"] += 1
            else:  # another proposal of a named new intent, or an existing intent's
                r = client.post(
                    f"/v1/discover/{p['id']}/merge", json={"intent": top, "confirm_members": True}
                )
                r.raise_for_status()
                actions["merge"] += 1
            labels[top] += int(r.json()["feedback_created"])
    return {"actions": dict(actions), "looked_at": looked, "named": sorted(named), "labels": dict(labels)}


def top_up(loop: Loop, hidden: list[str], labels: Counter[str], need: int, truth: dict[str, str],
           data: Data, since: str, budget: int) -> dict[str, Any]:  # fmt: skip
    """Hidden intents short of `need` labels: the uncertainty queue, one label an action (the
    intent is added as pending first, one action, when no proposal named it)."""
    short = [h for h in hidden if labels[h] < need]
    read = actions = 0
    with loop.client() as client:
        for h in short:
            if labels[h] == 0:
                r = client.post("/v1/admin/intents", json={"name": h, "route": data.routes.get(h, "general")})
                if r.status_code not in (201, 422):
                    r.raise_for_status()
                actions += 1
        seen: set[str] = set()
        while any(labels[h] < need for h in short) and read < budget:
            items = loop.review("uncertainty", 200, since, seed=read)
            items = [i for i in items if i["request_id"] not in seen]
            if not items:
                break
            for item in items:
                seen.add(item["request_id"])
                read += 1
                y = truth.get(item["text"])
                if y in short and labels[y] < need:
                    r = client.post(
                        "/v1/feedback",
                        json={"request_id": item["request_id"], "correct_intent": y, "source": "benchmark"},
                    )
                    r.raise_for_status()
                    labels[y] += 1
                    actions += 1
                if read >= budget:
                    break
    return {"short_before": short, "items_read": read, "actions": actions}


def picture(
    loop: Loop, champion: Path, since: str, found: list[dict[str, Any]], path: Path, title: str
) -> None:
    """The window's unrouted texts in 2-D (PCA of the champion's embedding, as the job sees them),
    coloured by proposal; unclustered texts grey."""
    from datetime import datetime

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from router.store import create_db_engine
    from router.store.discovery import unrouted_queries
    from training.discovery import embed

    engine = create_db_engine(loop.database_url)
    try:
        _, _, queries = unrouted_queries(engine, datetime.fromisoformat(since), datetime.now().astimezone())
    finally:
        engine.dispose()
    texts = [q.text for q in queries]
    xy = PCA(n_components=2, random_state=0).fit_transform(embed(champion, texts))
    member_of = {m["text"]: k for k, p in enumerate(found) for m in p["member_list"]}
    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    grey = [i for i, t in enumerate(texts) if t not in member_of]
    ax.scatter(xy[grey, 0], xy[grey, 1], s=6, c="lightgrey", label="not in a proposal")
    cmap = plt.get_cmap("tab20")
    for k, p in enumerate(found):
        idx = [i for i, t in enumerate(texts) if member_of.get(t) == k]
        if idx:
            ax.scatter(xy[idx, 0], xy[idx, 1], s=9, color=cmap(k % 20), label=", ".join(p["keywords"][:2]))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def test_scores(loop: Loop, data: Data, hidden: list[str]) -> dict[str, float]:
    results = loop.route([t for t, _ in data.test])
    new = [(r, y) for r, (_, y) in zip(results, data.test, strict=True) if y in hidden]
    old = [(r, y) for r, (_, y) in zip(results, data.test, strict=True) if y not in hidden]
    return {
        "new_recall": sum(r["intent"] == y for r, y in new) / len(new) if new else float("nan"),
        "old_accuracy": sum(r["intent"] == y for r, y in old) / len(old),
        "per_new_intent": {
            h: round(sum(r["intent"] == y for r, y in new if y == h) / max(1, sum(y == h for _, y in new)), 4)
            for h in hidden
        },
    }


def run(data: Data, args: argparse.Namespace) -> dict[str, Any]:
    work = args.work / f"{data.name}-hidden{args.hidden}-seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    hidden, rows, holdout, traffic = champion_data(data, args)
    print(f"{data.name}: hidden {', '.join(hidden)}; champion {len(rows)} examples, traffic {len(traffic)}")
    kept_routes = {k: v for k, v in data.routes.items() if k not in hidden}
    champion = train_champion(
        write_dataset(work / "champion-data", rows, holdout, kept_routes),
        work / "champion", work / "train.log", args.train_override,
    )  # fmt: skip
    loop = Loop(work / "product", args.quick)
    loop.root.mkdir(parents=True, exist_ok=True)
    loop.register(champion)
    state = loop.state
    try:
        if "before" not in state:
            state["before"] = test_scores(loop, data, hidden)
            state["window_start"] = now_iso()
            routed = loop.route([t for t, _ in traffic])
            state["traffic"] = {"queries": len(routed), "fallback": sum(r["fallback"] for r in routed)}
            state["hidden_traffic_fallback"] = sum(
                r["fallback"] for r, (_, y) in zip(routed, traffic, strict=True) if y in hidden
            ) / max(1, sum(y in hidden for _, y in traffic))
            loop.save()
        if "discovery" not in state:
            discover = [
                "intents", "discover", "--since", state["window_start"], "--min-size", str(args.min_size),
                "-r", str(loop.registry), "--database-url", loop.database_url, "--no-progress",
                *(["--below-confidence", str(args.below_confidence)] if args.below_confidence else []),
            ]  # fmt: skip
            rc, seconds = cli(discover, loop.log)
            if rc != 0:
                raise SystemExit(f"discover failed (exit {rc}); see {loop.log}")
            lines = [x for x in loop.log.read_text().splitlines() if x.startswith('{"run_id"')]
            summary = json.loads(lines[-1])  # the command's JSON line
            found = proposals(loop)
            state["discovery"] = {
                "seconds": round(seconds, 1),
                "summary": summary,
                **score(found, data.truth, hidden, summary["candidates"]),
            }
            if not args.quick:
                picture(
                    loop, champion, state["window_start"], found, image_path(data.name, args),
                    f"{data.name}: unrouted queries by proposal ({args.hidden} hidden intents)",
                )  # fmt: skip
            if not hidden:  # the negative control: what it proposes from queries of no intent
                loop.save()
                return {"hidden": hidden, "champion_examples": len(rows), **state}
            state["review"] = review(loop, found, data.truth, hidden, data)
            labels = Counter(state["review"]["labels"])
            state["top_up"] = top_up(
                loop, hidden, labels, args.labels_per_new_intent, data.truth, data, state["window_start"],
                args.review_budget,
            )  # fmt: skip
            state["labels_per_new_intent"] = {h: labels[h] for h in hidden}
            loop.save()
        if "after" not in state:
            rc, seconds = cli(
                ["retrain", "-r", str(loop.registry), "--database-url", loop.database_url, "--no-progress",
                 "--promotion", "direct", "--min-examples", str(args.min_examples)],
                loop.log,
            )  # fmt: skip
            state["retrain"] = {"exit": rc, "seconds": round(seconds, 1)}
            versions = sorted((loop.registry / "versions").glob("v*/decision.json"))
            if versions:
                decision = json.loads(versions[-1].read_text())
                state["retrain"]["reason"] = decision.get("reason")
                state["retrain"]["trained_intents"] = decision.get("intents", {}).get("trained")
            sent = failed = 0
            if rc == 0:
                sent, failed, _ = loop.reload_under_load([t for t, _ in traffic[:200]])
            state["reload"] = {"requests": sent, "failed": failed}
            state["after"] = test_scores(loop, data, hidden)
            loop.save()
    finally:
        loop.server.stop()
    return {"hidden": hidden, "champion_examples": len(rows), **state}


def run_key(name: str, args: argparse.Namespace) -> str:
    cut = f", unrouted also under {args.below_confidence:g} confidence" if args.below_confidence else ""
    return f"{name}, {args.hidden} hidden, seed {args.seed}{cut}"


def image_path(name: str, args: argparse.Namespace) -> Path:
    cut = f"-below{args.below_confidence:g}" if args.below_confidence else ""
    return REPO / "docs" / "images" / f"discovery-{name}-hidden{args.hidden}{cut}.png"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "Protocol: a champion trained on 50 examples per intent without the hidden intents serves "
        "the rest of the training split (all intents) as traffic; `switchboard intents discover` "
        "groups what fell back; the benchmark plays the reviewer through `/v1/discover` (true labels), "
        "retrains with direct promotion and reports on the official test split. A proposal finds an "
        f"intent at purity >= {PURE}. The old path (the learning loop's new-intent scenario, "
        f"uncertainty queue) read {OLD_PATH_ITEMS:,} items.",
        "",
        "| run | hidden found | ARI (clustered / with noise) | existing-majority proposals | actions "
        "| items looked at | labels per new intent | new recall | old accuracy before → after | retrain "
        "| failed at reload |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    runs = {k: r for k, r in sorted(results["runs"].items()) if r["hidden"]}
    controls = {k: r for k, r in sorted(results["runs"].items()) if not r["hidden"]}
    for key, r in runs.items():
        d, rev, up = r["discovery"], r["review"], r["top_up"]
        actions = sum(rev["actions"].values()) + up["actions"]
        looked = rev["looked_at"] + up["items_read"]
        per = r["labels_per_new_intent"]
        lines.append(
            f"| {key} | {d['hidden_found_count']} of {len(r['hidden'])} "
            f"| {d['ari_clustered']} / {d['ari_with_noise']} "
            f"| {d['existing_majority']} of {len(d['proposals'])} | {actions} | {looked} "
            f"| {min(per.values())}–{max(per.values())} | {100 * r['after']['new_recall']:.2f}% "
            f"| {100 * r['before']['old_accuracy']:.2f}% → {100 * r['after']['old_accuracy']:.2f}% "
            f"| {r['retrain']['seconds'] / 60:.1f} min "
            f"| {r['reload']['failed']} of {r['reload']['requests']} |"
        )
    lines += ["", "Per run:", ""]
    for key, r in runs.items():
        d = r["discovery"]
        lines.append(
            f"- **{key}** (hidden: {', '.join(r['hidden'])}): {r['traffic']['fallback']:,} of "
            f"{r['traffic']['queries']:,} traffic queries fell back "
            f"({100 * r['hidden_traffic_fallback']:.1f}% "
            f"of the hidden intents' ones); {d['candidates']:,} distinct unrouted texts, {d['clustered']:,} "
            f"clustered into {len(d['proposals'])} proposals in {d['seconds']:.0f} s (the whole job). "
            f"Reviewer actions: {', '.join(f'{n} {a}' for a, n in sorted(r['review']['actions'].items()))}, "
            f"then {r['top_up']['actions']} from the queue "
            f"({r['top_up']['items_read']} items read). Retrain: {r['retrain'].get('reason')}. "
            + machine_line(r["machine"])
        )
        lines += ["", f"![{key}: unrouted queries by proposal](images/{Path(r['image']).name})", ""]
    for key, r in controls.items():
        d = r["discovery"]
        oos = [p for p in d["proposals"] if p["majority"] == "oos"]
        lines += [
            f"**Negative control, {key}**: a champion of every intent ({r.get('per_intent', 50)} examples "
            f"each, out-of-scope included) at its own out-of-scope threshold; {r['traffic']['fallback']:,} "
            f"of {r['traffic']['queries']:,} traffic queries fell back; {d['candidates']:,} distinct "
            f"unrouted texts made {len(d['proposals'])} proposals, {len(oos)} of them mostly out-of-scope "
            "queries (queries of no intent)" + (":" if d["proposals"] else "."),
            "",
            *(
                f"- {p['size']} members, majority {p['majority']} (purity {p['purity']:.2f}), keywords "
                f"{', '.join(p['keywords'])}; nearest intent {p['nearest_intent']} "
                f"(similarity {p['nearest_similarity']})"
                for p in d["proposals"]
            ),
            "",
            f"![{key}: unrouted queries by proposal](images/{Path(r['image']).name})",
            "",
            machine_line(r["machine"]),
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--hidden", type=int, default=5)
    parser.add_argument("--per-intent", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--gate-holdout", type=float, default=0.3, help="share of the kept pool carved for the gate"
    )
    parser.add_argument("--min-size", type=int, default=10, help="switchboard intents discover --min-size")
    parser.add_argument(
        "--below-confidence", type=float, default=None, help="switchboard intents discover --below-confidence"
    )
    parser.add_argument("--labels-per-new-intent", type=int, default=20)
    parser.add_argument("--min-examples", type=int, default=10, help="switchboard retrain --min-examples")
    parser.add_argument("--review-budget", type=int, default=3000, help="most queue items read in the top-up")
    parser.add_argument("--train-override", nargs="*", default=[])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "discovery")
    parser.add_argument("--quick", action="store_true", help="smoke run: writes no results or docs")
    parser.add_argument("--note", default=None)
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the docs section from the results"
    )
    args = parser.parse_args()
    if args.report_only:
        replace_section(
            REPO / "docs" / "BENCHMARKS.md",
            "discovery",
            "Intent discovery",
            markdown(json.loads(RESULTS.read_text())),
        )
        return
    use_local_datasets()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data = load(args.dataset)
    started = time.perf_counter()
    result = run(data, args)
    result.update(
        per_intent=args.per_intent,
        below_confidence=args.below_confidence,
        image=str(image_path(data.name, args).relative_to(REPO)),
        machine=machine_info(),
        command="python benchmarks/discovery.py " + shlex.join(sys.argv[1:]),
        wall_minutes=round((time.perf_counter() - started) / 60, 1),
        **({"note": args.note} if args.note else {}),
    )
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=str)[:6000])
    if args.quick:
        return
    everything = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}
    everything["goals"] = GOALS
    everything["runs"][run_key(data.name, args)] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(everything, indent=2, default=str) + "\n")
    replace_section(REPO / "docs" / "BENCHMARKS.md", "discovery", "Intent discovery", markdown(everything))


if __name__ == "__main__":
    main()
