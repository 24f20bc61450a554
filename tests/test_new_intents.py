"""A new intent, end to end with real processes: a MiniLM champion that never saw `cancel_service`
serves; the intent is added through the admin API (pending); feedback names it; `retrain` grows
the head (the champion's rows kept, a fitted row added) and the challenger answers the new intent;
after a hot reload the router routes it to its department."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ONNX_ENGINE, SAMPLE, Server, read_rows

from serving.model_dir import read_model_info
from serving.registry import Registry

pytestmark = pytest.mark.slow
TOKEN = "new-intents-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW, ROUTE = "cancel_service", "retention"


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "route"])
        writer.writerows((r["text"], r["label"], r["route"]) for r in rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The sample data without NEW; a MiniLM champion trained on it (linear probe + 24 steps)."""
    from training.config import build_config
    from training.train import train

    root = tmp_path_factory.mktemp("new-intents")
    train_rows = read_rows(SAMPLE / "train.csv")
    test_rows = read_rows(SAMPLE / "test.csv")
    old = [r for r in train_rows if r["label"] != NEW]
    data = root / "data"
    data.mkdir()
    write_csv(data / "train.csv", [r for i, r in enumerate(old) if i % 8])
    write_csv(data / "validation.csv", [r for i, r in enumerate(old) if i % 8 == 0])
    write_csv(data / "test.csv", [r for r in test_rows if r["label"] != NEW])
    cfg = build_config(
        {
            "data": {"dataset": str(data)},
            "optim": {
                "max_steps": 24,
                "batch_size": 16,
                "learning_rate": 1e-4,
                "head_learning_rate": 1e-3,
                "head_init": "linear_probe",
            },
            "contrastive": {"mode": "never"},  # tests/test_contrastive.py covers the stage
            "output_dir": str(root / "champion"),
        }
    )
    train(cfg, progress=False)
    registry = Registry(root / "registry")
    registry.register(root / "champion", alias="champion")
    url = f"sqlite:///{root / 'store.db'}"
    server = Server(
        None,
        url,
        root / "server",
        extra_env={
            "SWITCHBOARD_REGISTRY_DIR": str(registry.root),
            "SWITCHBOARD_ADMIN_TOKEN": TOKEN,
            **ONNX_ENGINE,  # the head's growth is under test, not the engine (two starts here)
        },
    )
    try:
        yield {
            "registry": registry,
            "server": server.ensure_running(),
            "url": url,
            "feedback_texts": [r["text"] for r in train_rows if r["label"] == NEW],  # 24
            "new_test": [r["text"] for r in test_rows if r["label"] == NEW],  # 6, never trained on
            "old_test": [r["text"] for r in test_rows if r["label"] != NEW],
        }
    finally:
        server.stop()


def _predict(model_dir: Path, texts: list[str]) -> list[str]:
    from training.modeling import load_classifier, model_labels
    from training.predict import predict_proba

    model, tok = load_classifier(model_dir)
    labels = model_labels(model)
    return [labels[i] for i in predict_proba(model, tok, texts, progress=False).argmax(axis=1)]


def _grown_at_init(champion: Path, texts: list[str], labels: list[str], new_test: list[str]) -> list[str]:
    """The champion's model with NEW's head row grown (no training step): its answers."""
    import torch
    from safetensors.torch import load_file

    from training.config import ModelConfig, QuantizationSettings
    from training.data import LabelMap
    from training.head_growth import grow_head
    from training.modeling import build_classifier
    from training.predict import predict_proba

    old_labels = list(read_model_info(champion).labels)
    built = build_classifier(
        ModelConfig(base_model=str(champion)), QuantizationSettings(), LabelMap((*old_labels, NEW))
    )
    growth = grow_head(built.model, built.tokenizer, champion, texts, labels, max_length=64, progress=False)
    assert growth.kept == old_labels and growth.new == [NEW]
    champ_head = load_file(str(champion / "model.safetensors"))
    head = built.model.classifier  # type: ignore[union-attr]
    n = len(old_labels)
    assert torch.equal(head.weight[:n].detach(), champ_head["classifier.weight"])  # rows kept exactly
    assert torch.equal(head.bias[:n].detach(), champ_head["classifier.bias"])
    probs = predict_proba(built.model, built.tokenizer, new_test, progress=False)  # type: ignore[arg-type]
    return [[*old_labels, NEW][i] for i in probs.argmax(axis=1)]


def test_a_new_intent_is_added_trained_by_growing_the_head_and_served(world: dict) -> None:
    from router.store.queries import feedback_rows
    from training.feedback_data import resolve
    from training.retrain import Outcome, RetrainOptions, retrain

    registry: Registry = world["registry"]
    champion = registry.get("champion")
    old_labels = list(read_model_info(champion.path).labels)
    assert NEW not in old_labels

    with world["server"].client() as client:
        # 1. the intent is added (pending) and another one with too little feedback
        for name, route in ((NEW, ROUTE), ("roaming_charges", "billing")):
            added = client.post("/v1/admin/intents", json={"name": name, "route": route}, headers=AUTH)
            assert added.status_code == 201, added.text
        statuses = {i["intent"]: i["status"] for i in client.get("/v1/intents").json()["intents"]}
        assert statuses[NEW] == "pending" and statuses["bill_explanation"] == "served"

        # 2. agents route queries and correct them to the new intent
        texts = world["feedback_texts"] + ["is roaming in Spain extra", "roaming charges abroad"]
        names = [NEW] * len(world["feedback_texts"]) + ["roaming_charges"] * 2
        for text, name in zip(texts, names, strict=True):
            routed = client.post("/v1/route", json={"text": text}).json()
            assert routed["intent"] != NEW
            fb = client.post(
                "/v1/feedback", json={"request_id": routed["request_id"], "correct_intent": name}
            )
            assert fb.status_code == 201 and fb.json()["agree"] is False, fb.text

    # 3. the head growth alone (before any training step): the new row already answers
    at_init = _grown_at_init(
        champion.path,
        world["feedback_texts"] + world["old_test"],
        [NEW] * len(world["feedback_texts"]) + _predict(champion.path, world["old_test"]),
        world["new_test"],
    )
    init_recall = sum(p == NEW for p in at_init) / len(at_init)

    # 4. retrain: the pending intent with enough feedback is trained, the other waits
    decision = retrain(
        RetrainOptions(
            registry=registry.root, min_feedback=5, min_examples=10, holdout_fraction=0.25, promotion="direct"
        ),
        resolve(feedback_rows(world["url"])),
        progress=False,
    )
    assert decision.report["intents"] == {
        "trained": [NEW],
        "still_pending": {"roaming_charges": {"examples": 2, "needed": 8}},
        "retired": [],
        "renamed": {},
    }
    challenger = registry.get(decision.version or "challenger")
    info = read_model_info(challenger.path)
    assert list(info.labels) == [*old_labels, NEW]  # the old order, the new intent appended
    assert info.routes[NEW] == ROUTE and info.routes["bill_explanation"] == "billing"
    trained = json.loads((challenger.path / "metrics.json").read_text())["training"]["head_growth"]
    assert trained["new"] == [NEW] and trained["kept"] == old_labels

    new_predictions = _predict(challenger.path, world["new_test"])
    recall = sum(p == NEW for p in new_predictions) / len(new_predictions)
    champion_old = _predict(champion.path, world["old_test"])
    challenger_old = _predict(challenger.path, world["old_test"])
    agreement = sum(a == b for a, b in zip(champion_old, challenger_old, strict=True)) / len(champion_old)
    print(
        f"\nnew-intent recall on unseen texts: {init_recall:.0%} at init, {recall:.0%} after retrain; "
        f"old-label agreement with the champion: {agreement:.1%}; {decision.outcome.name}: {decision.reason}"
    )
    assert recall >= 5 / 6, new_predictions
    assert agreement >= 0.9
    assert decision.outcome == Outcome.PROMOTED, decision.reason
    after = {i.name: i.status for i in registry.taxonomy().intents}
    assert after[NEW] == "served" and after["roaming_charges"] == "pending"

    # 5. hot reload: the router serves the new intent and routes it to its department
    with world["server"].client() as client:
        reloaded = client.post("/v1/admin/reload", headers=AUTH, timeout=300)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["model_version"] == decision.version
        routed = [client.post("/v1/route", json={"text": t}).json() for t in world["new_test"]]
        assert sum(r["intent"] == NEW and r["route"] == ROUTE for r in routed) >= 5, routed
        statuses = {i["intent"]: i["status"] for i in client.get("/v1/intents").json()["intents"]}
        assert statuses[NEW] == "served" and statuses["roaming_charges"] == "pending"
        ok = client.post(
            "/v1/feedback", json={"request_id": routed[0]["request_id"], "correct_intent": "roaming_charges"}
        )
        assert ok.status_code == 201
