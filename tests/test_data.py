"""Dataset layer: every accepted format, validation errors, splits, report, fingerprint."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from training.data import (
    DatasetError,
    IntentDataset,
    LabelMap,
    Split,
    ValidationReport,
    load_dataset,
)
from training.data import hub as hub_module
from training.data.types import SourceData

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(
    not SHARED_DATASETS.is_dir(), reason=f"no local dataset copies at {SHARED_DATASETS}"
)

LABELS = ("balance", "card_lost", "transfer")
TEXTS = {
    "balance": ["what is my balance", "how much money do I have", "show my balance", "balance?"],
    "card_lost": ["I lost my card", "my card was stolen", "card missing", "where is my card"],
    "transfer": ["send money to mum", "transfer 20 pounds", "move money to savings", "pay Bob"],
}


def rows(n_per_label: int = 4, suffix: str = "") -> list[tuple[str, str]]:
    """(text, label) pairs, ``n_per_label`` per label, texts unique."""
    out = []
    for label in LABELS:
        for i in range(n_per_label):
            base = TEXTS[label][i % len(TEXTS[label])]
            out.append((f"{base} {i // len(TEXTS[label])}{suffix}".strip(), label))
    return out


def write_csv(path: Path, header: list[str], data: Sequence[tuple[str, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(data)
    return path


def write_jsonl(path: Path, objects: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


def csv_dir(tmp_path: Path, *, test: bool = True, validation: bool = True) -> Path:
    write_csv(tmp_path / "train.csv", ["text", "label"], rows(8))
    if validation:
        write_csv(tmp_path / "validation.csv", ["text", "label"], rows(2, " (val)"))
    if test:
        write_csv(tmp_path / "test.csv", ["text", "label"], rows(2, " (test)"))
    return tmp_path


# -- formats -----------------------------------------------------------------------------


def test_generic_csv_directory_with_all_splits(tmp_path: Path) -> None:
    ds = load_dataset(csv_dir(tmp_path))
    assert isinstance(ds, IntentDataset)
    assert (len(ds.train), len(ds.validation), len(ds.test or [])) == (24, 6, 6)
    assert ds.label_map.labels == LABELS
    assert ds.routes == {} and ds.descriptions == {} and not ds.has_oos
    assert ds.name == tmp_path.name
    assert ds.report.label_counts == {label: 8 for label in LABELS}
    assert not any("test" in w for w in ds.report.warnings)


def test_generic_jsonl_directory_with_route_and_val_alias(tmp_path: Path) -> None:
    routes = {"balance": "accounts", "card_lost": "cards", "transfer": "payments"}
    records = [{"text": t, "label": lab, "route": routes[lab]} for t, lab in rows(6)]
    write_jsonl(tmp_path / "train.jsonl", records)
    write_jsonl(tmp_path / "val.jsonl", [{"text": t, "label": lab} for t, lab in rows(1, "?")])
    write_jsonl(tmp_path / "test.jsonl", [{"text": t, "label": lab} for t, lab in rows(2, "!")])
    ds = load_dataset(tmp_path)
    assert (len(ds.train), len(ds.validation), len(ds.test or [])) == (18, 3, 6)
    assert ds.routes == routes


def test_json_list_file(tmp_path: Path) -> None:
    path = tmp_path / "intents.json"
    path.write_text(json.dumps([{"text": t, "label": lab} for t, lab in rows(10)]))
    ds = load_dataset(path)
    assert ds.name == "intents"
    assert len(ds.train) + len(ds.validation) + len(ds.test or []) == 30


def test_single_csv_file_is_train_and_carves_test_then_validation(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "queries.csv", ["text", "label"], rows(10))
    ds = load_dataset(path, test_fraction=0.2, validation_fraction=0.1)
    assert len(ds.test or []) == 6
    assert len(ds.validation) == 3  # ceil(0.1 * 24), raised to one per label
    assert len(ds.train) == 21
    for split in (ds.validation, ds.test):
        assert split is not None and set(split.labels) == set(LABELS)  # stratified
    assert any("no test split" in w for w in ds.report.warnings)
    all_texts = ds.train.texts + ds.validation.texts + (ds.test.texts if ds.test else [])
    assert sorted(all_texts) == sorted(t for t, _ in rows(10))


def test_banking77_layout_with_categories(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", ["text", "category"], rows(8))
    write_csv(tmp_path / "test.csv", ["text", "category"], rows(2, " t"))
    (tmp_path / "categories.json").write_text(json.dumps([*LABELS, "unused_label"]))
    ds = load_dataset(tmp_path)
    assert ds.label_map.labels == LABELS
    assert len(ds.test or []) == 6 and len(ds.train) + len(ds.validation) == 24
    assert any("unused_label" in w for w in ds.report.warnings)


def test_categories_with_descriptions(tmp_path: Path) -> None:
    csv_dir(tmp_path)
    descriptions = {label: f"about {label}" for label in LABELS}
    (tmp_path / "categories.json").write_text(json.dumps(descriptions))
    assert load_dataset(tmp_path).descriptions == descriptions


def test_label_not_in_categories_json_is_an_error(tmp_path: Path) -> None:
    csv_dir(tmp_path)
    (tmp_path / "categories.json").write_text(json.dumps(["balance", "transfer"]))
    with pytest.raises(DatasetError, match=r"categories\.json.*'card_lost'"):
        load_dataset(tmp_path)


def clinc_payload(n: int = 4) -> dict[str, list[list[str]]]:
    def part(suffix: str, count: int) -> list[list[str]]:
        return [[t + suffix, lab] for t, lab in rows(count)]

    def oos(prefix: str, count: int) -> list[list[str]]:
        return [[f"{prefix} off-topic question {i}", "oos"] for i in range(count)]

    return {
        "train": part("", n),
        "val": part(" v", 2),
        "test": part(" t", 2),
        "oos_train": oos("train", n),
        "oos_val": oos("val", 2),
        "oos_test": oos("test", 3),
    }


def test_clinc150_directory_with_oos_and_domains(tmp_path: Path) -> None:
    (tmp_path / "data_full.json").write_text(json.dumps(clinc_payload()))
    domains = {"banking": ["balance", "transfer"], "credit_cards": ["card_lost"]}
    (tmp_path / "domains.json").write_text(json.dumps(domains))
    ds = load_dataset(tmp_path)
    assert ds.has_oos
    assert ds.label_map.labels == ("balance", "card_lost", "oos", "transfer")  # sorted
    assert (len(ds.train), len(ds.validation), len(ds.test or [])) == (16, 8, 9)
    assert Counter(ds.test.labels if ds.test else [])["oos"] == 3
    assert ds.routes == {"balance": "banking", "card_lost": "credit_cards", "transfer": "banking"}
    assert "oos" not in ds.routes


def test_clinc150_file_spec(tmp_path: Path) -> None:
    path = tmp_path / "data_full.json"
    path.write_text(json.dumps(clinc_payload()))
    ds = load_dataset(path)
    assert ds.has_oos and ds.name == tmp_path.name and len(ds.test or []) == 9


def test_openai_prompt_completion_jsonl(tmp_path: Path) -> None:
    lines = [{"prompt": f"  {t}\n", "completion": f" {lab}\n"} for t, lab in rows(10)]
    ds = load_dataset(write_jsonl(tmp_path / "ft.jsonl", lines))
    assert ds.label_map.labels == LABELS
    assert all(t == t.strip() for t in ds.train.texts)
    assert "what is my balance 0" in ds.train.texts + ds.validation.texts + (ds.test.texts if ds.test else [])


def test_openai_chat_messages_jsonl(tmp_path: Path) -> None:
    def chat(text: str, label: str) -> dict[str, object]:
        return {
            "messages": [
                {"role": "system", "content": "Classify the banking query."},
                {"role": "user", "content": "earlier question"},
                {"role": "assistant", "content": "earlier answer"},
                {"role": "user", "content": [{"type": "text", "text": text}]},
                {"role": "assistant", "content": label},
            ]
        }

    write_jsonl(tmp_path / "train.jsonl", [chat(t, lab) for t, lab in rows(8)])
    write_jsonl(tmp_path / "test.jsonl", [chat(t, lab) for t, lab in rows(2, " t")])
    ds = load_dataset(tmp_path)
    assert ds.label_map.labels == LABELS
    assert "earlier question" not in ds.train.texts
    assert set(ds.test.texts if ds.test else []) == {t for t, _ in rows(2, " t")}


def test_chat_without_assistant_message_names_the_line(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "user", "content": "hello"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [bad])
    with pytest.raises(DatasetError, match=r"chat\.jsonl line 1: no 'assistant' message"):
        load_dataset(path)


# -- named datasets and hub ---------------------------------------------------------------


@needs_shared
def test_named_banking77_from_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(SHARED_DATASETS))
    ds = load_dataset("banking77")
    assert ds.name == "banking77"
    assert len(ds.train) + len(ds.validation) == 10003
    assert len(ds.test or []) == 3080
    assert len(ds.label_map) == 77 and not ds.has_oos
    assert set(ds.validation.labels) == set(ds.label_map.labels)  # stratified carve-out
    assert not any("no test split" in w for w in ds.report.warnings)


@needs_shared
def test_named_clinc150_from_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(SHARED_DATASETS))
    ds = load_dataset("clinc150")
    assert ds.has_oos and len(ds.label_map) == 151
    assert (len(ds.train), len(ds.validation), len(ds.test or [])) == (15100, 3100, 5500)
    assert len(ds.routes) == 150 and "oos" not in ds.routes
    assert ds.routes["pin_change"] == "banking"


def test_named_dataset_missing_under_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match=r"dataset not found: .*banking77.*SWITCHBOARD_DATA_DIR"):
        load_dataset("banking77")


def test_named_dataset_without_data_dir_goes_to_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_hub(hub_id: str, config: str | None = None, **_: object) -> SourceData:
        calls.append((hub_id, config))
        return SourceData(name=hub_id, train=[], origins={"train": hub_id})

    monkeypatch.delenv("SWITCHBOARD_DATA_DIR", raising=False)
    monkeypatch.setattr(hub_module, "load_hub", fake_load_hub)
    for spec in ("banking77", "clinc150", "someone/intents"):
        with pytest.raises(DatasetError, match="dataset is empty"):
            load_dataset(spec)
    assert calls == [
        ("PolyAI/banking77", None),
        ("clinc/clinc_oos", "plus"),
        ("someone/intents", None),
    ]


def test_hub_records_convert_class_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "intent": datasets.ClassLabel(names=["greet", "oos"])}
    )

    def split(n: int) -> object:
        data: dict[str, Sequence[object]] = {
            "text": [f"hello {i}" for i in range(n)] + [f"weather {i}" for i in range(n)],
            "intent": [0] * n + [1] * n,
        }
        return datasets.Dataset.from_dict(data, features=features)

    fake = datasets.DatasetDict({"train": split(10), "validation": split(2), "test": split(3)})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: fake)
    source = hub_module.load_hub("clinc/clinc_oos", "plus", name="clinc150")
    assert source.name == "clinc150"
    assert Counter(r.label for r in source.train) == {"greet": 10, "oos": 10}
    assert source.origins["train"] == "hub clinc/clinc_oos (plus) [train]"
    ds = load_dataset("someone/intents")
    assert ds.name == "someone/intents" and ds.has_oos
    assert (len(ds.train), len(ds.validation), len(ds.test or [])) == (20, 4, 6)


def test_hub_failure_is_one_line_dataset_error(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetError, match=r"^could not load hub dataset 'a/b': Couldn't reach the Hub$"):
        load_dataset("a/b")


def test_unknown_spec_is_not_found(tmp_path: Path) -> None:
    for spec in ("no_such_dataset", str(tmp_path / "missing.csv"), "some/dir/train.csv"):
        with pytest.raises(DatasetError, match="dataset not found"):
            load_dataset(spec)


# -- validation errors ------------------------------------------------------------------


def test_directory_without_train_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "test.csv", ["text", "label"], rows(2))
    with pytest.raises(DatasetError, match=rf"no train file in {tmp_path}.*train\.csv"):
        load_dataset(tmp_path)


def test_missing_label_column_names_file_and_found_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", ["text", "topic"], [("hi", "greet")])
    with pytest.raises(DatasetError) as error:
        load_dataset(path)
    message = str(error.value)
    assert "train.csv" in message and "'label'" in message and "found columns: text, topic" in message
    assert "\n" not in message


def test_missing_text_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", ["query", "label"], [("hi", "greet")])
    with pytest.raises(
        DatasetError, match=r"train\.csv: missing column 'text' \(found columns: query, label\)"
    ):
        load_dataset(path)


def test_missing_field_in_jsonl_names_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(DatasetError, match=r"train\.jsonl line 2: missing field 'label"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (("", "balance"), "empty text"),
        (("   ", "balance"), "empty text"),
        (("hi", " "), "empty label"),
    ],
)
def test_empty_text_or_label_names_file_and_line(tmp_path: Path, row: tuple[str, str], expected: str) -> None:
    path = write_csv(tmp_path / "train.csv", ["text", "label"], [*rows(4), row])
    with pytest.raises(DatasetError, match=rf"train\.csv line 14: {expected}"):
        load_dataset(path)


def test_invalid_jsonl_names_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    with pytest.raises(DatasetError, match=r"train\.jsonl line 3: invalid JSON"):
        load_dataset(path)


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "data_full.json"
    path.write_text('{\n  "train": [\n    ["a", "b"],,\n  ]\n}')
    with pytest.raises(DatasetError, match=r"data_full\.json line 3: invalid JSON"):
        load_dataset(path)


def test_label_too_small_to_split_names_label_and_count(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", ["text", "label"], [*rows(6), ("rare query", "rare")])
    with pytest.raises(DatasetError, match=r"label 'rare' has only 1 distinct example\(s\) in .*train\.csv"):
        load_dataset(path)


def test_label_with_enough_examples_when_test_is_given(tmp_path: Path) -> None:
    csv_dir(tmp_path, validation=False)
    # 2 examples suffice for carving validation alone; 3 are needed when test is carved too.
    write_csv(tmp_path / "train.csv", ["text", "label"], rows(2))
    assert len(load_dataset(tmp_path).validation) == 3
    (tmp_path / "test.csv").unlink()
    with pytest.raises(DatasetError, match=r"only 2 distinct example\(s\).*at least 3"):
        load_dataset(tmp_path)


def test_eval_labels_missing_from_train_are_named(tmp_path: Path) -> None:
    csv_dir(tmp_path)
    write_csv(tmp_path / "test.csv", ["text", "label"], [*rows(1, "?"), ("new thing", "brand_new")])
    with pytest.raises(DatasetError, match=r"test\.csv: labels not present in train: 'brand_new'"):
        load_dataset(tmp_path)


def test_empty_dataset(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", ["text", "label"], [])
    with pytest.raises(DatasetError, match=r"dataset is empty: .*train\.csv has no examples"):
        load_dataset(path)


def test_conflicting_route_column(tmp_path: Path) -> None:
    data = [(t, lab, "billing") for t, lab in rows(4)] + [("pay the bill", "transfer", "sales")]
    path = write_csv(tmp_path / "train.csv", ["text", "label", "route"], data)
    with pytest.raises(DatasetError, match=r"line 14: label 'transfer' has route 'sales' but 'billing'"):
        load_dataset(path)


def test_routes_yaml_wins_over_route_column_with_a_warning(tmp_path: Path) -> None:
    csv_dir(tmp_path)
    data = [(t, lab, "old_desk") for t, lab in rows(8)]
    write_csv(tmp_path / "train.csv", ["text", "label", "route"], data)
    route_map = {"default_route": "general", "routes": {"balance": "accounts"}}
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump(route_map))
    ds = load_dataset(tmp_path)
    assert ds.routes == {"balance": "accounts", "card_lost": "old_desk", "transfer": "old_desk"}
    assert any("routes.yaml overrides" in w and "'balance'" in w for w in ds.report.warnings)


def test_bad_routes_yaml_and_ambiguous_split_files(tmp_path: Path) -> None:
    csv_dir(tmp_path)
    (tmp_path / "routes.yaml").write_text("routes: [a, b]\n")
    with pytest.raises(DatasetError, match=r"routes\.yaml: expected a 'routes:' mapping"):
        load_dataset(tmp_path)
    (tmp_path / "routes.yaml").unlink()
    write_jsonl(tmp_path / "valid.jsonl", [{"text": "x", "label": "balance"}])
    with pytest.raises(DatasetError, match=r"more than one validation file"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(("validation_fraction", "test_fraction"), [(0.0, 0.2), (0.1, 1.0)])
def test_bad_fraction(tmp_path: Path, validation_fraction: float, test_fraction: float) -> None:
    with pytest.raises(DatasetError, match="must be between 0 and 1"):
        load_dataset(csv_dir(tmp_path), validation_fraction=validation_fraction, test_fraction=test_fraction)


# -- report, splits, label map, fingerprint ---------------------------------------------------


def test_report_counts_duplicates_and_conflicts(tmp_path: Path) -> None:
    csv_dir(tmp_path)
    extra = [("what is my balance 0", "balance")] * 2 + [("send money to mum 0", "card_lost")]
    write_csv(tmp_path / "train.csv", ["text", "label"], rows(8) + extra)
    ds = load_dataset(tmp_path)
    report = ds.report
    assert isinstance(report, ValidationReport)
    assert report.duplicate_texts == 2
    assert report.conflicting_texts == [("send money to mum 0", ["card_lost", "transfer"])]
    assert len(ds.train) == 27  # duplicates are kept
    assert any("duplicate" in w for w in report.warnings)
    assert any("conflicting" in w for w in report.warnings)
    summary = report.summary()
    assert "2 extra copies" in summary and "conflicting texts: 1" in summary


def test_report_warns_about_eval_texts_in_train(tmp_path: Path) -> None:
    csv_dir(tmp_path)
    write_csv(tmp_path / "test.csv", ["text", "label"], rows(2))  # same texts as train
    assert any("6 test text(s) also appear in train" in w for w in load_dataset(tmp_path).report.warnings)


def test_carved_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", ["text", "label"], rows(20))
    first, again = load_dataset(path, seed=1), load_dataset(path, seed=1)
    other = load_dataset(path, seed=2)
    assert first.validation == again.validation and first.test == again.test
    assert first.fingerprint == again.fingerprint
    assert set(first.validation.texts) != set(other.validation.texts)
    assert first.fingerprint != other.fingerprint
    assert Counter(first.test.labels if first.test else []) == {label: 4 for label in LABELS}
    assert sorted(Counter(first.validation.labels).values()) == [1, 2, 2]  # ceil(0.1 * 48)


def test_copies_of_a_text_stay_on_one_side_of_the_split(tmp_path: Path) -> None:
    data = rows(20) + [(t, lab) for t, lab in rows(20)[::3]] * 2
    path = write_csv(tmp_path / "train.csv", ["text", "label"], data)
    for seed in range(5):
        ds = load_dataset(path, seed=seed)
        sides = [
            set(ds.train.texts),
            set(ds.validation.texts),
            set(ds.test.texts if ds.test else []),
        ]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])


def test_label_map_and_fingerprint_ignore_row_order(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data = rows(8)
    write_csv(tmp_path / "a" / "train.csv", ["text", "label"], data)
    write_csv(tmp_path / "b" / "train.csv", ["text", "label"], data[::-1])
    for name in ("a", "b"):
        write_csv(tmp_path / name / "validation.csv", ["text", "label"], rows(1, "?"))
        write_csv(tmp_path / name / "test.csv", ["text", "label"], rows(1, "!"))
    a, b = load_dataset(tmp_path / "a"), load_dataset(tmp_path / "b")
    assert a.label_map == b.label_map == LabelMap(LABELS)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    write_csv(tmp_path / "b" / "test.csv", ["text", "label"], rows(1, "!!"))
    assert load_dataset(tmp_path / "b").fingerprint != a.fingerprint


def test_fixed_labels_keep_their_order(tmp_path: Path) -> None:
    fixed = ["transfer", "extra_label", "balance", "card_lost"]
    ds = load_dataset(csv_dir(tmp_path), labels=fixed)
    assert ds.label_map.labels == tuple(fixed)
    assert ds.label_map.label2id["transfer"] == 0
    with pytest.raises(DatasetError, match=r"not in the fixed label set.*'card_lost'"):
        load_dataset(tmp_path, labels=["transfer", "balance"])
    with pytest.raises(DatasetError, match="repeated labels: 'balance'"):
        load_dataset(tmp_path, labels=["balance", "balance", "card_lost", "transfer"])


def test_label_map_api() -> None:
    label_map = LabelMap.from_labels(["b", "a", "c", "a"])
    assert label_map.labels == ("a", "b", "c") and len(label_map) == 3
    assert label_map.id2label == {0: "a", 1: "b", 2: "c"}
    assert label_map.label2id == {"a": 0, "b": 1, "c": 2}
    assert label_map.encode(["c", "a"]) == [2, 0]
    assert label_map.decode([2, 0]) == ["c", "a"]
    with pytest.raises(DatasetError, match=r"unknown label\(s\) 'x', 'y'"):
        label_map.encode(["a", "y", "x"])


def test_split_checks_lengths() -> None:
    assert len(Split(texts=["a", "b"], labels=["x", "y"])) == 2
    with pytest.raises(DatasetError, match="2 texts but 1 labels"):
        Split(texts=["a", "b"], labels=["x"])


# -- the project's sample dataset --------------------------------------------------------------


def test_sample_dataset_loads_with_routes() -> None:
    sample = REPO / "data" / "sample"
    ds = load_dataset(sample)
    assert len(ds.label_map) == 10 and not ds.has_oos
    assert len(ds.test or []) == 60 and len(ds.train) + len(ds.validation) == 240
    route_map = yaml.safe_load((sample / "routes.yaml").read_text())
    assert ds.routes == route_map["routes"]
    assert set(ds.routes) == set(ds.label_map.labels)
    assert {"default_route", "fallback_route"} <= set(route_map)
    assert ds.report.duplicate_texts == 0 and not ds.report.conflicting_texts
    assert min(ds.report.label_counts.values()) >= 20


def test_named_dataset_offline_without_data_dir_names_both_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(hub_id: str, config: str | None = None, **_: object) -> SourceData:
        raise DatasetError(f"could not load hub dataset {hub_id!r}: no network")

    monkeypatch.delenv("SWITCHBOARD_DATA_DIR", raising=False)
    monkeypatch.setattr(hub_module, "load_hub", offline)
    with pytest.raises(DatasetError, match=r"PolyAI/banking77.*no network.*SWITCHBOARD_DATA_DIR is not set"):
        load_dataset("banking77")
