"""The intent taxonomy: pending / retiring / renaming changes beside the registry's versions, the
`switchboard intents` commands, the admin API, feedback naming a pending intent, and the head
growth that trains new intents (on tiny models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support.fakes import LABELS, ROUTES, FakeEngine, make_settings, run, serving
from typer.testing import CliRunner

from router.cli import app as cli
from serving import taxonomy as tx
from serving.registry import Registry
from serving.taxonomy import Changes, Taxonomy, TaxonomyError

runner = CliRunner()
TOKEN = "taxonomy-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def fake_model_dir(path: Path, labels: tuple[str, ...], routes: dict[str, str]) -> Path:
    """Just what the registry reads of an exported model: config.json's label map, routes.yaml."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"id2label": {str(i): lab for i, lab in enumerate(labels)}}))
    (path / "routes.yaml").write_text("routes:\n" + "".join(f"  {k}: {v}\n" for k, v in routes.items()))
    return path


def registry_with(root: Path, labels: tuple[str, ...] = LABELS, routes: dict[str, str] = ROUTES) -> Registry:
    registry = Registry(root / "registry")
    registry.register(fake_model_dir(root / f"m{len(registry.versions())}", labels, routes), alias="champion")
    return registry


def taxonomy_of(labels: tuple[str, ...], changes: Changes | None = None) -> Taxonomy:
    return Taxonomy(labels, {"a": "ra", "b": "rb", "c": "rc"}, {"a": "about a"}, changes or Changes())


def change(t: Taxonomy, fn: Any, *args: str) -> Taxonomy:
    changes = t.changes.copy()
    fn(changes, t, *args)
    return Taxonomy(t.served_labels, t.routes, t.descriptions, changes)


# -- the model ------------------------------------------------------------------------------------


def test_add_rename_retire_and_the_label_sets() -> None:
    t = taxonomy_of(("a", "b", "c"))
    t = change(t, tx.add, "new", "cards", "  kept my card ")
    t = change(t, tx.rename, "b", "bee")
    t = change(t, tx.retire, "c")
    assert [(i.name, i.status, i.route, i.renamed_to) for i in t.intents] == [
        ("a", "served", "ra", None),
        ("b", "renaming", "rb", "bee"),
        ("c", "retiring", "rc", None),
        ("new", "pending", "cards", None),
    ]
    assert t.changes.pending["new"]["description"] == "kept my card"
    assert t.feedback_labels() == ["a", "bee", "new"]
    assert t.target_labels(set()) == ["a", "bee"]  # head order kept, retired left out
    assert t.target_labels({"new"}) == ["a", "bee", "new"]  # new intents after the kept ones
    assert t.relabel() == {"b": "bee"} and t.dropped() == {"c"}
    assert (t.route_of("bee"), t.route_of("new"), t.route_of("zzz")) == ("rb", "cards", None)
    assert t.description_of("a") == "about a" and t.description_of("new") == "kept my card"
    # renaming by the new name again, and back to the champion's name, are fine
    assert change(t, tx.rename, "bee", "bea").changes.renames == {"b": "bea"}
    assert change(t, tx.rename, "bee", "b").changes.renames == {}


@pytest.mark.parametrize(
    ("fn", "args", "code", "field", "needle"),
    [
        (tx.add, ("a", "x"), "exists", "name", "'a' already exists (served)"),
        (tx.add, ("bee", "x"), "exists", "name", "already exists (renaming)"),
        (tx.add, ("new", "x"), "exists", "name", "already exists (pending)"),
        (tx.add, ("c", "x"), "exists", "name", "already exists (retiring)"),
        (tx.add, ("has space", "x"), "invalid_name", "name", "invalid intent name"),
        (tx.add, ("_lead", "x"), "invalid_name", "name", "invalid intent name"),
        (tx.add, ("x" * 201, "x"), "invalid_name", "name", "at most 200"),
        (tx.add, ("fine", "  "), "no_route", "route", "needs a route"),
        (tx.rename, ("zzz", "y"), "unknown_intent", "name", "no intent 'zzz' to rename"),
        (tx.rename, ("c", "y"), "unknown_intent", "name", "no intent 'c'"),  # retiring
        (tx.rename, ("a", "new"), "exists", "new_name", "already exists"),
        (tx.rename, ("a", "no/slash"), "invalid_name", "new_name", "invalid intent name"),
        (tx.retire, ("zzz",), "unknown_intent", "name", "no intent 'zzz' to retire"),
        (tx.retire, ("c",), "unknown_intent", "name", "no intent 'c'"),  # already retiring
    ],
)
def test_changes_that_cannot_be_made(
    fn: Any, args: tuple[str, ...], code: str, field: str, needle: str
) -> None:
    t = taxonomy_of(("a", "b", "c"))
    t = change(change(change(t, tx.add, "new", "cards"), tx.rename, "b", "bee"), tx.retire, "c")
    with pytest.raises(TaxonomyError) as err:
        change(t, fn, *args)
    assert (err.value.code, err.value.field) == (code, field)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_pending_renames_and_retirements_act_at_once() -> None:
    t = change(taxonomy_of(("a",)), tx.add, "p", "r")
    t = change(t, tx.rename, "p", "q")
    t = change(t, tx.rename, "q", "s")
    assert [i.name for i in t.pending] == ["s"]
    assert t.relabel() == {"p": "s", "q": "s"}  # feedback given under older names follows
    t = change(t, tx.retire, "s")
    assert t.pending == [] and t.relabel() == {}


def test_statuses_follow_the_champion(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, ("a", "b", "c"), {"a": "ra", "b": "rb", "c": "rc"})
    registry.change_taxonomy(lambda c, t: tx.add(c, t, "new", "cards"))
    registry.change_taxonomy(lambda c, t: tx.retire(c, t, "c"))
    registry.change_taxonomy(lambda c, t: tx.rename(c, t, "b", "bee"))
    assert {i.name: i.status for i in registry.taxonomy().intents} == {
        "a": "served",
        "b": "renaming",
        "c": "retiring",
        "new": "pending",
    }
    # a retrain carried the changes out and its challenger was promoted
    registry.register(
        fake_model_dir(tmp_path / "v2", ("a", "bee", "new"), {"new": "cards"}), alias="champion"
    )
    after = registry.taxonomy()
    assert [(i.name, i.status) for i in after.intents] == [
        ("a", "served"),
        ("bee", "served"),
        ("new", "served"),
    ]
    assert after.feedback_labels() == ["a", "bee", "new"] and after.target_labels(set()) == [
        "a",
        "bee",
        "new",
    ]
    # the file's stale entries never get in the way: the served `new` retires, `c` comes back
    registry.change_taxonomy(lambda c, t: tx.retire(c, t, "new"))
    assert {i.name: i.status for i in registry.taxonomy().intents}["new"] == "retiring"
    registry.change_taxonomy(lambda c, t: tx.add(c, t, "c", "rc2"))
    now = registry.taxonomy()
    assert now.changes.retired.keys() == {"new"} and now.route_of("c") == "rc2"
    # rolling back to the first champion: its intents are served again, with the changes
    registry.rollback()
    assert {i.name: i.status for i in registry.taxonomy().intents}["b"] == "renaming"


def test_a_broken_file_is_one_line(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    (registry.root / tx.TAXONOMY_FILE).write_text("{not json")
    with pytest.raises(TaxonomyError, match="not valid JSON"):
        registry.taxonomy()


# -- the command line -----------------------------------------------------------------------------


def test_cli_add_list_rename_retire(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    r = ["--registry", str(registry.root)]
    added = runner.invoke(
        cli, ["intents", "add", "card_swallowed", "--route", "cards", "--description", "ATM", *r]
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, ["intents", "list", "--json", *r])
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["card_swallowed"] == {
        "name": "card_swallowed",
        "route": "cards",
        "description": "ATM",
        "status": "pending",
        "renamed_to": None,
    }
    assert rows["bill_explanation"]["status"] == "served" and rows["bill_explanation"]["route"] == "billing"
    table = runner.invoke(cli, ["intents", "list", *r], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "card_swallowed" in table.stdout and "pending" in table.stdout
    renamed = runner.invoke(cli, ["intents", "rename", "no_signal", "no_coverage", *r])
    assert renamed.exit_code == 0 and "next retrain" in renamed.stdout
    retired = runner.invoke(cli, ["intents", "retire", "cancel_service", *r])
    assert retired.exit_code == 0 and "retiring" in retired.stdout
    env_list = runner.invoke(
        cli, ["intents", "list", "--json"], env={"SWITCHBOARD_REGISTRY": str(registry.root)}
    )
    statuses = {row["name"]: row["status"] for row in json.loads(env_list.stdout)}
    assert statuses["no_signal"] == "renaming" and statuses["cancel_service"] == "retiring"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["add", "bill_explanation", "--route", "x"], "intent 'bill_explanation' already exists"),
        (["add", "bad name", "--route", "x"], "invalid intent name 'bad name'"),
        (["add", "fine", "--route", " "], "needs a route"),
        (["rename", "nope", "x"], "no intent 'nope' to rename"),
        (["retire", "nope"], "no intent 'nope' to retire"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    registry = registry_with(tmp_path)
    result = runner.invoke(cli, ["intents", *args, "--registry", str(registry.root)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and needle in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output


def test_cli_without_a_registry(tmp_path: Path) -> None:
    for args in (["list"], ["add", "x", "--route", "r"], ["retire", "x"]):
        result = runner.invoke(cli, ["intents", *args, "--registry", str(tmp_path / "none")])
        assert result.exit_code == 2 and "no model registry at" in result.stderr
    assert not (tmp_path / "none").exists()


# -- the router -----------------------------------------------------------------------------------


def test_admin_intents_and_feedback_naming_a_pending_intent(tmp_path: Path) -> None:
    registry = registry_with(tmp_path)
    settings = make_settings(tmp_path, registry_dir=registry.root, admin_token=TOKEN)

    async def scenario() -> None:
        async with serving(settings, FakeEngine()) as client:
            assert (await client.get("/v1/admin/intents")).status_code == 401
            listed = (await client.get("/v1/admin/intents", headers=AUTH)).json()
            assert listed["champion"] == "v0001"
            assert [(i["name"], i["status"]) for i in listed["intents"]] == [(x, "served") for x in LABELS]

            # feedback may not name an intent before it is added
            rid = (await client.post("/v1/route", json={"text": "the ATM kept my card"})).json()["request_id"]
            body = {"request_id": rid, "correct_intent": "card_swallowed"}
            before = await client.post("/v1/feedback", json=body)
            assert before.status_code == 422 and before.json()["errors"][0]["allowed"] == list(LABELS)

            add = {"name": "card_swallowed", "route": "cards", "description": "ATM kept the card"}
            created = await client.post("/v1/admin/intents", json=add, headers=AUTH)
            assert created.status_code == 201, created.text
            pending = {"name": "card_swallowed", "status": "pending", "route": "cards", "renamed_to": None}
            assert {**pending, "description": "ATM kept the card"} in created.json()["intents"]

            clash = await client.post("/v1/admin/intents", json={**add, "name": "no_signal"}, headers=AUTH)
            assert clash.status_code == 422
            assert clash.json()["errors"][0]["field"] == "name" and "already exists" in clash.json()["detail"]
            bad = await client.post("/v1/admin/intents", json={**add, "name": "a b"}, headers=AUTH)
            assert bad.status_code == 422 and bad.json()["errors"][0]["type"] == "invalid_name"

            # the runtime picked the change up: feedback may name the pending intent
            stored = await client.post("/v1/feedback", json=body)
            assert stored.status_code == 201, stored.text
            assert stored.json()["correct_intent"] == "card_swallowed" and stored.json()["agree"] is False
            unknown = await client.post("/v1/feedback", json={**body, "correct_intent": "nope"})
            assert unknown.status_code == 422
            assert unknown.json()["errors"][0]["allowed"] == [*LABELS, "card_swallowed"]
            assert "pending: card_swallowed" in unknown.json()["detail"]

            intents = (await client.get("/v1/intents")).json()["intents"]
            assert intents[-1] == {
                "intent": "card_swallowed",
                "route": "cards",
                "out_of_scope": False,
                "status": "pending",
                "renamed_to": None,
            }
            assert intents[0]["status"] == "served"

            # rename and retire: served ones wait for the retrain, feedback follows at once
            ok = await client.post(
                "/v1/admin/intents/no_signal/rename", json={"new_name": "no_coverage"}, headers=AUTH
            )
            assert ok.status_code == 200, ok.text
            gone = await client.post("/v1/admin/intents/cancel_service/retire", headers=AUTH)
            assert gone.status_code == 200
            missing = await client.post("/v1/admin/intents/nope/retire", headers=AUTH)
            assert missing.status_code == 404 and missing.json()["errors"][0]["type"] == "unknown_intent"
            taken = await client.post(
                "/v1/admin/intents/bill_explanation/rename", json={"new_name": "oos"}, headers=AUTH
            )
            assert taken.status_code == 422 and taken.json()["errors"][0]["field"] == "new_name"
            statuses = {
                i["intent"]: (i["status"], i["renamed_to"])
                for i in (await client.get("/v1/intents")).json()["intents"]
            }
            assert statuses["no_signal"] == ("renaming", "no_coverage")
            assert statuses["cancel_service"] == ("retiring", None)
            retiring = await client.post("/v1/feedback", json={**body, "correct_intent": "cancel_service"})
            assert retiring.status_code == 422
            renamed = await client.post("/v1/feedback", json={**body, "correct_intent": "no_coverage"})
            assert renamed.status_code == 201

    run(scenario())
    assert registry.taxonomy().changes.pending.keys() == {"card_swallowed"}


def test_admin_intents_without_a_registry(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, model_dir=tmp_path, admin_token=TOKEN)

    async def scenario() -> None:
        async with serving(settings) as client:
            for resp in (
                await client.get("/v1/admin/intents", headers=AUTH),
                await client.post("/v1/admin/intents", json={"name": "x", "route": "r"}, headers=AUTH),
                await client.post("/v1/admin/intents/x/retire", headers=AUTH),
            ):
                assert resp.status_code == 409 and "no model registry" in resp.json()["detail"]
            # without a registry feedback names the served intents only, as before
            assert [i["status"] for i in (await client.get("/v1/intents")).json()["intents"]] == [
                "served"
            ] * 4

    run(scenario())


# -- head growth ----------------------------------------------------------------------------------


def test_fit_rows_keeps_the_old_rows_and_learns_the_new() -> None:
    from training.head_growth import fit_rows

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(4).repeat_interleave(30)
    x = centres[y] + torch.randn(len(y), 16, generator=g)
    # an "old" head that knows classes 0..2 (nearest-centre rows); row 3 is new (random)
    weight = torch.cat([centres[:3], torch.randn(1, 16, generator=g)])
    bias = torch.cat([-0.5 * centres[:3].pow(2).sum(dim=1), torch.zeros(1)])
    new_w, new_b = fit_rows(x, y, weight, bias, [3])
    assert new_b is not None
    assert torch.equal(new_w[:3], weight[:3]) and torch.equal(new_b[:3], bias[:3])
    predicted = (x @ new_w.T + new_b).argmax(dim=1)
    assert (predicted[y == 3] == 3).float().mean() > 0.9
    old_before = (x[y < 3] @ weight[:3].T + bias[:3]).argmax(dim=1)
    assert (predicted[y < 3] == old_before).float().mean() > 0.95


def test_grow_head_copies_rows_by_name_and_fits_the_new_ones(tiny_llama: Path, tmp_path: Path) -> None:
    """A tiny Llama classifier for a, b, c grows to a, cee (c renamed), d (new); b retired."""
    from training.config import ModelConfig, QuantizationSettings
    from training.data import LabelMap
    from training.export import save_model_dir
    from training.head_growth import grow_head, parent_head
    from training.modeling import build_classifier

    cfg = ModelConfig(base_model=str(tiny_llama), method="full", max_length=32)
    parent = build_classifier(cfg, QuantizationSettings(), LabelMap(("a", "b", "c")))
    parent_dir = save_model_dir(parent, parent.model, tmp_path / "parent")  # type: ignore[arg-type]
    labels, weight, bias = parent_head(parent_dir, "score")
    assert labels == ["a", "b", "c"] and bias is None

    child_cfg = ModelConfig(base_model=str(parent_dir), method="full", max_length=32)
    child = build_classifier(child_cfg, QuantizationSettings(), LabelMap(("a", "cee", "d")))
    texts = [f"please {w} my account {i}" for w in ("close", "open", "fix", "move") for i in range(8)]
    text_labels = ["a"] * 8 + ["cee"] * 8 + ["d"] * 8 + ["a"] * 8
    growth = grow_head(
        child.model, child.tokenizer, parent_dir, texts, text_labels,
        renames={"c": "cee"}, max_length=32, progress=False,
    )  # fmt: skip
    score = child.model.score.weight.detach()  # type: ignore[union-attr]
    assert torch.equal(score[0], weight[0]) and torch.equal(score[1], weight[2])
    assert not torch.equal(score[2], torch.zeros_like(score[2]))
    assert (growth.kept, growth.new, growth.dropped, growth.renamed) == (
        ["a", "cee"],
        ["d"],
        ["b"],
        {"c": "cee"},
    )
    assert growth.fit_examples == 32 and growth.new_recall is not None
