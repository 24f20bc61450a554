"""Retraining from feedback: resolve, gate, promote, rollback, crash safety (real store, real training)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert
from support import WEAK, build_weak_champion, read_rows, store_feedback

from router.store.db import create_db_engine
from router.store.models import requests
from router.store.queries import feedback_rows
from serving.registry import Registry
from training.feedback_data import FeedbackExample, FeedbackSet, resolve
from training.gate import PairedComparison, compare, decide
from training.modeling import load_classifier
from training.predict import predict_proba
from training.retrain import Outcome, RetrainDecision, RetrainOptions, retrain

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("retrain")
    registry, unseen = build_weak_champion(root)
    return {"root": root, "registry": registry, "unseen": unseen}


def _predict(model_dir: Path, texts: list[str]) -> list[str]:
    model, tok = load_classifier(model_dir)
    probs = predict_proba(model, tok, texts, progress=False)
    return [model.config.id2label[int(i)] for i in probs.argmax(axis=1)]


def test_resolve_latest_wins_and_conflicts_are_reported() -> None:
    class Row:
        def __init__(self, rid: str, text: str | None, label: str) -> None:
            self.request_id, self.text, self.correct_intent = rid, text, label
            self.predicted_intent, self.model_version, self.created_at = "p", "v1", datetime.now(UTC)

    fb = resolve(
        [
            Row("r1", "hello", "a"),
            Row("r1", "hello", "b"),
            Row("r2", "hi", "a"),
            Row("r3", "hi", "c"),
            Row("r4", None, "a"),
        ]
    )
    assert fb.superseded == 1 and fb.without_text == 1
    assert fb.conflicts == {"hi": ["a", "c"]}
    assert [(e.text, e.label) for e in fb.examples] == [("hello", "b")]


def test_gate_rules() -> None:
    def paired(n: int, only_champion: int, only_challenger: int) -> PairedComparison:
        """n examples; the rest right for both."""
        champ = (
            [False] * only_challenger
            + [True] * only_champion
            + [True] * (n - only_champion - only_challenger)
        )
        chall = (
            [True] * only_challenger
            + [False] * only_champion
            + [True] * (n - only_champion - only_challenger)
        )
        return compare(champ, chall)

    def gate(test: PairedComparison, fb: PairedComparison) -> tuple[bool, str, dict]:
        return decide({"test": test, "feedback_holdout": fb}, 0.005, 0.2)

    better = paired(40, 0, 12)  # 12 of 12 discordant held-out examples favour the challenger
    assert gate(paired(1000, 3, 1), better)[0]  # a tie on test within the margin
    worse = gate(paired(1000, 40, 5), better)  # worse on test, beyond chance and the margin
    assert not worse[0] and "significantly worse" in worse[1]
    flat = gate(paired(1000, 3, 1), paired(40, 4, 4))  # not better on feedback
    assert not flat[0] and "not significantly better" in flat[1]
    lucky = gate(paired(1000, 3, 1), paired(16, 7, 9))  # "better" on 16 examples by chance
    assert not lucky[0] and lucky[2]["feedback_holdout"]["more_feedback_needed"] > 0
    # better on the test set beyond chance (random feedback rarely shows a gain on its own few
    # held-out texts): promoted; the two chances to pass share alpha: 0.04 feedback, 0.01 test
    test_only = gate(paired(3000, 138, 200), paired(60, 7, 3))
    assert test_only[0] and test_only[1].startswith("test accuracy")
    assert not gate(paired(3000, 138, 172), paired(60, 1, 1))[0]  # test p = 0.030: not below 0.01
    assert gate(paired(1000, 3, 1), paired(6, 0, 5))[0]  # 5 of 5 held-out new-intent texts: p = 0.031
    # significantly worse on held-out feedback: refused, however good the test set looks
    fb_worse = gate(paired(3000, 100, 200), paired(40, 10, 0))
    assert not fb_worse[0] and "worse on held-out feedback" in fb_worse[1]


def stored_feedback(url: str) -> FeedbackSet:
    """What `switchboard retrain` hands to training: the store's feedback rows, resolved."""
    return resolve(feedback_rows(url))


@pytest.mark.slow
def test_too_little_feedback_is_nothing_to_do(world: dict, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store_feedback(url, [("hello there", "add_line", WEAK)])
    decision = retrain(
        RetrainOptions(registry=world["registry"].root, min_feedback=5), stored_feedback(url), progress=False
    )
    assert decision.outcome == Outcome.NOTHING_TO_DO and "1 usable" in decision.reason


@pytest.mark.slow
def test_corrective_feedback_promotes_a_better_challenger_and_rollback_restores(
    world: dict, tmp_path: Path
) -> None:
    registry: Registry = world["registry"]
    champion = registry.get("champion")
    before = _predict(champion.path, world["unseen"])
    wrong = [(t, p) for t, p in zip(world["unseen"], before, strict=True) if p != WEAK]
    assert len(wrong) >= 10, f"the champion should miss most unseen {WEAK} queries: {before}"

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store_feedback(url, [(t, p, WEAK) for t, p in wrong])
    decision = retrain(
        RetrainOptions(
            registry=registry.root,
            min_feedback=5,
            holdout_fraction=0.5,  # enough held-out corrections for the paired test to decide
            feedback_weight=3,
            overrides=["optim.max_steps=24"],
            start_from="champion",
            continue_lr_factor=1.0,  # a barely trained champion: 24 steps at the full rate
            promotion="direct",
        ),
        stored_feedback(url),
        progress=False,
    )
    scores = decision.report["scores"]
    assert decision.outcome == Outcome.PROMOTED, decision.reason
    assert (
        scores["challenger"]["feedback_holdout"]["accuracy"]
        > scores["champion"]["feedback_holdout"]["accuracy"]
    )
    new = registry.get("champion")
    assert new.version == decision.version and new.meta["parent"] == champion.version
    assert (new.path / "decision.md").is_file() and json.loads((new.path / "decision.json").read_text())[
        "promoted"
    ]
    steps = decision.report["step_seconds"]  # where the time went, for profiling a slow night
    assert list(steps) == ["read", "plan", "train", "gate", "register"] and steps["train"] > 0
    assert "(read " in (new.path / "decision.md").read_text()
    after = _predict(new.path, [t for t, _ in wrong])
    assert sum(p == WEAK for p in after) >= 0.8 * len(wrong)

    assert registry.rollback().version == champion.version
    assert _predict(registry.champion_path(), world["unseen"]) == before


@pytest.mark.slow
def test_worse_challenger_is_refused(world: dict, tmp_path: Path) -> None:
    registry: Registry = world["registry"]
    champion_before = registry.get("champion").version
    # systematically wrong "feedback": every text of four intents relabelled as refund_request
    rows = [
        r
        for r in read_rows(REPO / "data" / "sample" / "train.csv")
        if r["label"] in {"no_signal", "login_problem", "add_line", "bill_explanation"}
    ]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store_feedback(url, [(r["text"], r["label"], "refund_request") for r in rows])
    decision = retrain(
        RetrainOptions(
            registry=registry.root,
            min_feedback=5,
            feedback_weight=5,
            overrides=["optim.max_steps=24"],
            start_from="champion",
            continue_lr_factor=1.0,  # a barely trained champion: 24 steps at the full rate
        ),
        stored_feedback(url),
        progress=False,
    )
    assert decision.outcome == Outcome.NOT_PROMOTED, decision.report.get("scores")
    assert "significantly worse on the test set" in decision.reason  # the gate names the evidence
    assert registry.get("champion").version == champion_before
    assert registry.get("challenger").version == decision.version


@pytest.mark.slow
def test_killed_retrain_leaves_registry_unchanged(world: dict, tmp_path: Path) -> None:
    registry: Registry = world["registry"]
    aliases_before = registry.aliases_file.read_bytes()
    versions_before = [v.version for v in registry.versions()]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store_feedback(url, [(t, "add_line", WEAK) for t in world["unseen"]])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router.cli",
            "retrain",
            "--registry",
            str(registry.root),
            "--database-url",
            url,
            "--min-feedback",
            "5",
            "--no-progress",
            "optim.max_steps=2000",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(30)  # mid-training: data read, challenger training
    assert proc.poll() is None, "retrain ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert registry.aliases_file.read_bytes() == aliases_before
    assert [v.version for v in registry.versions()] == versions_before


def test_held_out_feedback_is_never_feedback_the_champion_trained_on() -> None:
    """A second retrain must not judge the champion on the feedback it learnt in the first one
    (that leak once refused a challenger 3.8 points better on the test set)."""
    from datetime import UTC, datetime

    from training.retrain import _text_key, split_feedback

    def ex(text: str) -> FeedbackExample:
        return FeedbackExample(text, text, "a", "b", "v1", datetime.now(UTC))

    first = [ex(f"old {i}") for i in range(50)]
    second = [ex(f"new {i}") for i in range(50)]
    trained_before = {_text_key(e.text) for e in first[:40]}  # the champion trained on 40 of them
    train, holdout = split_feedback(first + second, trained_before, 0.2, seed=42)
    assert holdout and not {_text_key(e.text) for e in holdout} & trained_before
    assert {e.text for e in first[:40]} <= {e.text for e in train}  # still learnt by the challenger
    assert not {e.text for e in train} & {e.text for e in holdout}
    assert len(train) + len(holdout) == 100


@pytest.mark.slow
def test_self_training_adds_confident_traffic_but_never_test_or_feedback_texts(
    world: dict, tmp_path: Path, sample_dir: Path
) -> None:
    """`--self-train`: logged texts without feedback that the champion answers confidently join
    train with its answer; the original splits' texts and reviewed texts never do."""
    from router.store.queries import unlabelled_texts
    from training.self_training import pseudo_labels

    registry: Registry = world["registry"]
    champion = registry.get("champion")
    train_texts = [r["text"] for r in read_rows(sample_dir / "train.csv")]
    test_texts = [r["text"] for r in read_rows(sample_dir / "test.csv")]
    fresh = [f"{t} please" for t in train_texts[:40]]  # traffic no split holds
    reviewed = world["unseen"][:12]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    predicted = _predict(champion.path, reviewed)
    store_feedback(url, [(t, p, WEAK) for t, p in zip(reviewed, predicted, strict=True)])
    engine = create_db_engine(url)
    with engine.begin() as conn:  # traffic: fresh texts, test texts, and a reviewed text again
        for i, text in enumerate([*fresh, *test_texts[:10], reviewed[0]]):
            conn.execute(
                insert(requests).values(
                    id=str(uuid.uuid4()), created_at=datetime.now(UTC) + timedelta(seconds=i), text=text,
                    intent="x", confidence=0.9, route="x", fallback=False, model_version="v0001",
                    latency_ms=1.0,
                )
            )  # fmt: skip
    engine.dispose()
    traffic = unlabelled_texts(url)
    assert set(traffic) == {*fresh, *test_texts[:10]}  # the reviewed text has feedback already

    labels = list(json.loads((champion.path / "config.json").read_text())["id2label"].values())
    targets = [x for x in labels if x != WEAK]
    found = pseudo_labels(champion.path, traffic, min_confidence=0.5, exclude=test_texts, targets=targets)
    assert found.offered == 50 and found.excluded == 10 and found.scored == 40
    assert found.examples and {t for t, _ in found.examples} <= set(fresh)
    assert WEAK not in {y for _, y in found.examples}  # not a target: left out
    model, tok = load_classifier(champion.path)
    probs = predict_proba(model, tok, [t for t, _ in found.examples], progress=False)
    assert (probs.max(axis=1) >= 0.5).all()
    with pytest.raises(ValueError, match="confidence"):
        pseudo_labels(champion.path, traffic, min_confidence=1.5, exclude=[], targets=labels)
    # each example carries the whole answer over the targets, for distillation
    assert len(found.probabilities) == len(found.examples)
    for (_, label), answer in zip(found.examples, found.probabilities, strict=True):
        assert max(answer, key=answer.__getitem__) == label and set(answer) <= set(targets)
    # several teachers answer with their averaged probabilities (the same model twice: its answers)
    twice = pseudo_labels(
        [champion.path, champion.path], traffic, min_confidence=0.5, exclude=test_texts, targets=targets
    )
    assert twice.examples == found.examples

    def self_train(teachers: int, workdir: Path) -> RetrainDecision:
        options = RetrainOptions(
            registry=registry.root, min_feedback=5, self_train=0.5, self_train_teachers=teachers,
            promote=False, overrides=["optim.max_steps=4"], workdir=workdir,
        )  # fmt: skip
        return retrain(options, stored_feedback(url), traffic=traffic, progress=False)

    decision = self_train(0, tmp_path / "work")
    used = decision.report["self_training"]
    assert used["offered"] == 50 and used["excluded"] == 10 and used["used"] > 0, used
    trained = [r["text"] for r in read_rows(tmp_path / "work" / "data" / "train.csv")]
    assert len([t for t in trained if t in set(fresh)]) == used["used"]
    assert not set(trained) & set(test_texts)
    assert registry.get("champion").version == champion.version  # promote=False

    # two stages: two teachers trained on the same labels first, their averaged answers label it
    staged = self_train(2, tmp_path / "staged")
    used = staged.report["self_training"]
    assert len(used["teachers"]) == 2 and used["scored"] == 40 and used["used"] > 0, used
    teachers = [
        json.loads((tmp_path / "staged" / f"teacher-{i}" / "metrics.json").read_text()) for i in (0, 1)
    ]
    student = json.loads((registry.get(staged.version).path / "metrics.json").read_text())
    # the teachers learnt the labelled data only; the challenger that plus their confident answers
    assert teachers[0]["training"]["train_examples"] == teachers[1]["training"]["train_examples"]
    assert student["training"]["train_examples"] == teachers[0]["training"]["train_examples"] + used["used"]
    trained = [r["text"] for r in read_rows(tmp_path / "staged" / "data" / "train.csv")]
    assert len([t for t in trained if t in set(fresh)]) == used["used"]
    assert not set(trained) & set(test_texts)
