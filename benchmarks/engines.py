"""Engines: vLLM, PyTorch and ONNX Runtime (fp32, int8) on one model, one host, one run (issue 28).

Run:  python benchmarks/engines.py [--model-dir runs/bench/minilm-banking77] [--dataset banking77]
      (needs `wrk`; a model dir that does not exist is trained first: `switchboard train -d DATASET`
      with `--train-override` overrides). Resumable: each engine's results are written as it ends;
      `--resume` keeps those already in the results file and measures the rest.
Smoke run (seconds):  python benchmarks/engines.py --dataset data/sample --model-dir /tmp/eng/model \
      --train-override optim.max_steps=4 --texts 60 --duration 2 --out /tmp/eng/engines.json --no-doc

Same model, same texts (the first `--texts` of the dataset's test split), per engine:
- offline: queries/s over the texts in batches of 32 (vLLM: the whole list, its scheduler batches),
  best of 2; the median time of one query alone; accuracy, and argmax agreement with PyTorch fp32;
- the router (`switchboard serve`, request log in SQLite, /metrics on) on it, except PyTorch (no
  router engine): seconds from process start to /readyz 200, wrk closed-loop at concurrency 1, 8
  and 32 (req/s, p50, p99), resident memory of the whole process tree (API process and engine
  processes, RSS summed) after the load, and, from a registry, during a hot swap (peak) and with a
  challenger in shadow.
The baseline is the router on in-process vLLM (`--engine local`). ONNX int8 is measured even where
the export's quality rule refused it (its verdict is reported). Results: benchmarks/results/
engines.json, the "Engines" section of docs/BENCHMARKS.md and docs/images/engines.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402
from benchmarks.wrk_load import lua_script, wrk  # noqa: E402
from router.devserver import DevServer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "engines.json"
PICTURE = REPO / "docs" / "images" / "engines.png"
ENGINES = ("vllm", "torch", "onnx-fp32", "onnx-int8")
ROUTER_ENGINE = {"vllm": "local", "onnx-fp32": "onnx", "onnx-int8": "onnx"}
CONCURRENCY = (1, 8, 32)
BATCH = 32
SINGLES = 50
TOKEN = "engines-benchmark-admin-token"


# -- the model and its ONNX variants ------------------------------------------------------------


def ensure_model(model_dir: Path, dataset: str, overrides: list[str]) -> None:
    if (model_dir / "config.json").is_file():
        return
    cmd = [sys.executable, "-m", "router.cli", "train", "-d", dataset, "-o", str(model_dir), "--no-progress"]
    print("training:", " ".join(cmd[2:] + overrides), flush=True)
    subprocess.run([*cmd, *overrides], cwd=REPO, check=True)


def variant(model_dir: Path, work: Path, precision: str) -> Path:
    """A copy of `model_dir` (big files linked) whose onnx.json serves `precision`, whatever the
    quality rule chose: both are measured. The version name stays the model's."""
    from serving.files import write_json_atomic
    from serving.model_dir import read_model_info
    from serving.onnx_model import ONNX_FILE, ONNX_INT8_FILE, ONNX_REPORT, read_onnx_report
    from training.onnx_export import export_fp32, quantize_int8

    out = work / f"onnx-{precision}"
    if (out / ONNX_REPORT).is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    version = read_model_info(model_dir).version
    for item in model_dir.iterdir():
        if item.name in {ONNX_REPORT, "checkpoints"} or (out / item.name).exists():
            continue
        if item.is_dir():
            shutil.copytree(item, out / item.name)
        elif item.stat().st_size > 1_000_000:
            (out / item.name).symlink_to(item.resolve())
        else:
            shutil.copy2(item, out / item.name)
    (out / "switchboard-version.json").write_text(json.dumps({"version": version}))
    if not (out / ONNX_FILE).exists():
        export_fp32(model_dir, out / ONNX_FILE)
    if precision == "int8" and not (out / ONNX_INT8_FILE).exists():
        quantize_int8(out / ONNX_FILE, out / ONNX_INT8_FILE)
    report = dict(read_onnx_report(model_dir) or {})
    verdict = report.get("precision")
    name = ONNX_INT8_FILE if precision == "int8" else ONNX_FILE
    write_json_atomic(
        out / ONNX_REPORT,
        {**report, "passed": True, "file": name, "precision": precision, "export_chose": verdict},
    )
    return out


# -- offline ---------------------------------------------------------------------------------------


def offline(
    engine: str, model_dir: Path, texts: list[str], max_length: int
) -> tuple[dict[str, Any], np.ndarray]:
    """(queries/s, single-query p50) and the probabilities of `texts` with one engine in-process."""
    if engine == "vllm":
        from serving.offline import classify_texts, close_llm, open_llm

        llm = open_llm(model_dir, max_model_len=max_length + 8)
        try:
            dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
            row = _timed(lambda batch: classify_texts(llm, batch, max_length=max_length), texts, whole=True)
            probs = classify_texts(llm, texts, max_length=max_length)
        finally:
            close_llm(llm)
        return {"dtype": dtype, **row}, probs
    if engine == "torch":
        from training.modeling import load_classifier
        from training.predict import predict_proba

        model, tokenizer = load_classifier(model_dir)

        def run(batch: list[str]) -> np.ndarray:
            return predict_proba(
                model, tokenizer, batch, max_length=max_length, batch_size=BATCH, progress=False
            )

        return {"dtype": "float32", **_timed(run, texts)}, run(texts)
    from serving.onnx_model import OnnxClassifier, served_onnx_file

    classifier = OnnxClassifier(model_dir, served_onnx_file(model_dir), max_length=max_length)
    row = _timed(classifier.probabilities, texts)
    return {
        "dtype": engine.removeprefix("onnx-"),
        "threads": classifier.threads,
        **row,
    }, classifier.probabilities(texts, batch_size=BATCH)


def torch_predictions(model_dir: Path, texts: list[str], max_length: int) -> list[int]:
    from training.modeling import load_classifier
    from training.predict import predict_proba

    model, tokenizer = load_classifier(model_dir)
    probs = predict_proba(model, tokenizer, texts, max_length=max_length, progress=False)
    return [int(i) for i in probs.argmax(axis=1)]


def _timed(run: Any, texts: list[str], *, whole: bool = False) -> dict[str, float]:
    run(texts[:BATCH])
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for i in range(0, len(texts), len(texts) if whole else BATCH):
            run(texts[i : i + (len(texts) if whole else BATCH)])
        best = max(best, len(texts) / (time.perf_counter() - started))
    singles = []
    for text in (texts * (SINGLES // max(1, len(texts)) + 1))[:SINGLES]:
        t0 = time.perf_counter()
        run([text])
        singles.append(time.perf_counter() - t0)
    return {"qps": round(best, 1), "single_p50_ms": round(1e3 * float(np.median(singles)), 2)}


# -- the router -----------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children (vLLM's EngineCore and workers), MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return round(sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20, 1)
    except psutil.Error:
        return 0.0


def router(kind: str, model_dir: Path, texts: list[str], work: Path, duration_s: int) -> dict[str, Any]:
    db = f"sqlite:///{work / f'router-{kind}-{model_dir.name}.db'}"
    server = DevServer(
        model_dir,
        database_url=db,
        cwd=REPO,
        env={"SWITCHBOARD_ENGINE": kind, "SWITCHBOARD_LOG_LEVEL": "warning"},
        log_path=work / f"router-{model_dir.name}.log",
    )
    started = time.monotonic()
    with server:
        ready_s = round(time.monotonic() - started, 2)
        assert server.proc is not None
        idle = rss_mb(server.proc.pid)
        script = lua_script([json.dumps({"text": t}) for t in texts], work / "route.lua")
        url = f"{server.base_url}/v1/route"
        wrk(url, script, 8, min(5, duration_s))  # warm-up
        runs = []
        for c in CONCURRENCY:
            row = wrk(url, script, c, duration_s)
            runs.append({k: row[k] for k in ("concurrency", "req_per_s", "p50_ms", "p99_ms", "requests")})
            print(f"  router {model_dir.name} c={c}: {row['req_per_s']:.0f} req/s, "
                  f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms", flush=True)  # fmt: skip
        return {
            "ready_s": ready_s,
            "rss_mb_idle": idle,
            "rss_mb_after_load": rss_mb(server.proc.pid),
            "wrk": runs,
        }


def swap_and_shadow(kind: str, model_dir: Path, texts: list[str], work: Path) -> dict[str, Any]:
    """Memory of a router serving a registry's champion: one model, during a hot swap (peak), and
    with a challenger in shadow under load."""
    from serving.registry import Registry
    from serving.rollout import start_shadow

    root = work / f"registry-{model_dir.name}"
    shutil.rmtree(root, ignore_errors=True)
    registry = Registry(root)
    registry.register(model_dir, alias="champion")
    registry.register(model_dir, alias="challenger")
    env = {
        "SWITCHBOARD_ENGINE": kind,
        "SWITCHBOARD_REGISTRY_DIR": str(root),
        "SWITCHBOARD_REGISTRY_POLL_S": "0.5",
        "SWITCHBOARD_ADMIN_TOKEN": TOKEN,
        "SWITCHBOARD_ROLLOUT_AUTO": "false",
        "SWITCHBOARD_LOG_LEVEL": "warning",
    }
    db = f"sqlite:///{work / f'registry-{model_dir.name}.db'}"
    server = DevServer(None, database_url=db, cwd=REPO, env=env, log_path=work / f"swap-{model_dir.name}.log")
    with server:
        assert server.proc is not None
        pid = server.proc.pid
        one = rss_mb(pid)
        peak, done = [one], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(rss_mb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        _post(f"{server.base_url}/v1/admin/reload", {"version": "v0001"})
        swap_s = round(time.monotonic() - started, 2)
        done.set()
        sampler.join()
        start_shadow(registry, by="benchmark")
        _wait_shadow(server.base_url)
        script = lua_script([json.dumps({"text": t}) for t in texts], work / "route.lua")
        wrk(f"{server.base_url}/v1/route", script, 8, 3)
        return {"rss_mb_one_model": one, "rss_mb_swap_peak": max(peak), "swap_s": swap_s,
                "rss_mb_with_shadow": rss_mb(pid)}  # fmt: skip


def _post(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(req, timeout=600).read()


def _wait_shadow(base_url: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        req = urllib.request.Request(
            f"{base_url}/v1/admin/rollout", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        body = json.loads(urllib.request.urlopen(req, timeout=10).read())
        if body["served_by_this_replica"]["stage"] == "shadow":
            return
        time.sleep(0.5)
    raise SystemExit("the challenger never reached shadow")


# -- report -----------------------------------------------------------------------------------------


def _c(row: dict[str, Any], c: int) -> dict[str, Any] | None:
    return next((x for x in row.get("router", {}).get("wrk", []) if x["concurrency"] == c), None)


def to_markdown(r: dict[str, Any]) -> str:
    e = r["engines"]
    lines = [
        f"Command: `{r['command']}`. {machine_line(r['machine'])} Model: `{r['model_dir']}`; "
        f"{r['n_texts']} test texts of `{r['dataset']}`. Offline: batches of {BATCH} (vLLM: the whole "
        f"list), best of 2; single query: median of {SINGLES}. Router: `switchboard serve --engine …`, "
        f"wrk closed loop {r['duration_s']} s per point; memory: RSS of the router's whole process tree.",
        "",
        "| engine | offline q/s | single p50 | router c=1 | router c=8 | router c=32 (p50 / p99) | "
        "RSS | ready | accuracy | agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ENGINES:
        row = e.get(name)
        if row is None:
            continue
        cells = []
        for c in CONCURRENCY:
            x = _c(row, c)
            text = "—" if x is None else f"{x['req_per_s']:.0f}"
            if x is not None and c == 32:
                text += f" ({x['p50_ms']:.1f} / {x['p99_ms']:.1f} ms)"
            cells.append(text)
        rt = row.get("router", {})
        mem = f"{rt['rss_mb_after_load']:.0f} MB" if rt else "—"
        ready = f"{rt['ready_s']:.1f} s" if rt else "—"
        lines.append(
            f"| {name} ({row['offline']['dtype']}) | {row['offline']['qps']:.0f} | "
            f"{row['offline']['single_p50_ms']:.1f} ms | {' | '.join(cells)} | {mem} | {ready} | "
            f"{row['accuracy']:.2%} | {row['agreement']:.2%} |"
        )
    extras = [(n, e[n]["memory"]) for n in ENGINES if e.get(n, {}).get("memory")]
    if extras:
        lines += ["", "| router on | one model | during a hot swap (peak) | with a shadow challenger |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for name, m in extras:
            lines.append(
                f"| {name} | {m['rss_mb_one_model']:.0f} MB | {m['rss_mb_swap_peak']:.0f} MB "
                f"({m['swap_s']:.1f} s) | {m['rss_mb_with_shadow']:.0f} MB |"
            )
    lines += ["", *goals(r)]
    return "\n".join(lines)


def goals(r: dict[str, Any]) -> list[str]:
    e = r["engines"]
    base = _c(e.get("vllm", {}), 32)
    out = []
    for name in ("onnx-fp32", "onnx-int8"):
        row, x = e.get(name), _c(e.get(name, {}), 32)
        if row is None or x is None or base is None:
            continue
        out.append(
            f"- {name}: router c=32 {x['req_per_s'] / base['req_per_s']:.2f}× the vLLM router "
            f"(goal on a CPU without bf16: ≥ 1.35× fp32, ≥ 2× int8), "
            f"{x['req_per_s'] / row['offline']['qps']:.0%} of its offline rate (≥ 90%), p99/p50 "
            f"{x['p99_ms'] / x['p50_ms']:.1f} (≤ 2), ready {row['router']['ready_s']:.1f} s (≤ 3 s), "
            f"RSS {row['router']['rss_mb_after_load']:.0f} MB (≤ 600); "
            f"the export's quality rule chose {row.get('export_chose') or '?'}."
        )
    return out


def picture(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ENGINES if n in r["engines"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(names))
    offline_qps = [r["engines"][n]["offline"]["qps"] for n in names]
    router32 = [(_c(r["engines"][n], 32) or {}).get("req_per_s", 0.0) for n in names]
    ax1.bar(x - 0.2, offline_qps, 0.4, label="offline")
    ax1.bar(x + 0.2, router32, 0.4, label="router, c=32")
    ax1.set_xticks(x, names)
    ax1.set_ylabel("queries/s")
    ax1.legend()
    ax1.set_title("Throughput")
    rss = [r["engines"][n].get("router", {}).get("rss_mb_after_load", 0.0) for n in names]
    ax2.bar(x, rss, 0.5, color="tab:gray")
    for i, value in enumerate(rss):
        if not value:
            ax2.text(i, 0, "no router", ha="center", va="bottom")
    ax2.set_xticks(x, names)
    ax2.set_ylabel("MB (RSS, whole router)")
    ax2.set_title("Router memory")
    fig.suptitle(f"Engines on {r['machine']['cpu']}, {r['machine']['cores']} cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "runs" / "bench" / "minilm-banking77")
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--train-override", action="append", default=[], help="section.key=value")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk point")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, help="variants, logs, databases (default: runs/<out>-work)")
    parser.add_argument("--resume", action="store_true", help="keep the engines already in --out")
    parser.add_argument("--no-extras", action="store_true", help="skip the swap and shadow memory runs")
    parser.add_argument("--no-doc", action="store_true", help="write the JSON only")
    args = parser.parse_args()
    use_local_datasets()
    from serving.model_dir import read_model_info
    from training.data import load_dataset

    ensure_model(args.model_dir, args.dataset, args.train_override)
    data = load_dataset(args.dataset)
    split = data.test if data.test is not None else data.validation
    texts, labels = list(split.texts[: args.texts]), list(split.labels[: args.texts])
    info = read_model_info(args.model_dir)
    truth = np.asarray([info.labels.index(x) if x in info.labels else -1 for x in labels])
    # variants, logs and databases: under runs/ (ignored), never beside the results in the repository
    work = args.work or REPO / "runs" / f"{args.out.stem}-work"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    results.update(
        command="python benchmarks/engines.py " + " ".join(sys.argv[1:]),
        machine=machine_info(),
        model_dir=str(
            args.model_dir.relative_to(REPO) if args.model_dir.is_relative_to(REPO) else args.model_dir
        ),
        dataset=args.dataset,
        n_texts=len(texts),
        duration_s=args.duration,
    )
    results.setdefault("engines", {})
    predictions_file = work / "torch-predictions.json"  # the reference of every agreement
    wanted = [n for n in args.engines.split(",") if n]
    unknown = sorted(set(wanted) - set(ENGINES))
    if unknown:
        raise SystemExit(f"unknown engine {unknown[0]!r}; expected some of {', '.join(ENGINES)}")
    if "torch" not in wanted and not predictions_file.is_file():
        predictions_file.write_text(json.dumps(torch_predictions(args.model_dir, texts, info.max_length)))
    for name in sorted(wanted, key=lambda n: n != "torch"):  # PyTorch first: the reference
        if name in results["engines"] and args.resume:
            print(f"{name}: kept from {args.out}", flush=True)
            continue
        model_dir = args.model_dir if not name.startswith("onnx") else variant(args.model_dir, work, name[5:])
        print(f"{name}: offline", flush=True)
        speed, probs = offline(name, model_dir, texts, info.max_length)
        top = probs.argmax(axis=1)
        if name == "torch":
            predictions_file.write_text(json.dumps(top.tolist()))
        reference = np.asarray(json.loads(predictions_file.read_text()))
        row: dict[str, Any] = {
            "offline": speed,
            "accuracy": round(float((top == truth).mean()), 6),
            "agreement": round(float((top == reference).mean()), 6),
        }
        if name.startswith("onnx"):
            row["export_chose"] = json.loads((model_dir / "onnx.json").read_text()).get("export_chose")
        if name in ROUTER_ENGINE:
            print(f"{name}: router", flush=True)
            row["router"] = router(ROUTER_ENGINE[name], model_dir, texts, work, args.duration)
            if not args.no_extras:
                row["memory"] = swap_and_shadow(ROUTER_ENGINE[name], model_dir, texts, work)
        results["engines"][name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # resumable from here
    print(to_markdown(results))
    if not args.no_doc:
        picture(results, PICTURE)
        body = to_markdown(results) + f"\n\n![Engines]({PICTURE.relative_to(REPO / 'docs')})"
        replace_section(
            REPO / "docs" / "BENCHMARKS.md", "engines", "Engines: vLLM, PyTorch and ONNX Runtime", body
        )


if __name__ == "__main__":
    main()
