"""The challenger's recipe (training.challenger.plan_challenger), without training: what a retrain
continued from the champion is told to train, and what an explicit override keeps."""

from __future__ import annotations

from pathlib import Path

from serving.taxonomy import Changes, Taxonomy
from training.challenger import plan_challenger
from training.config import load_config
from training.data import load_dataset
from training.retrain_options import RetrainOptions

REPO = Path(__file__).resolve().parents[1]


def _plan(tmp_path: Path, sample_dir: Path, overrides: list[str], **options: object):  # type: ignore[no-untyped-def]
    data = load_dataset(sample_dir)
    labels = list(data.label_map.labels)
    taxonomy = Taxonomy(tuple(labels), dict(data.routes), {}, Changes())
    opts = RetrainOptions(registry=tmp_path / "registry", overrides=overrides, **options)  # type: ignore[arg-type]
    config = load_config(REPO / "configs" / "minilm-cpu.yaml", overrides)
    return plan_challenger(
        config, opts, champion=tmp_path / "champion", line_base="base", base=data, taxonomy=taxonomy,
        targets=labels, relabel={}, renamed={}, feedback=[], feedback_total=1, never_pseudo=[],
        traffic=[], scratch=tmp_path / "scratch", progress=False,
    )  # fmt: skip


def test_from_the_champion_the_retrain_trains_its_own_epochs_at_a_scaled_rate(
    tmp_path: Path, sample_dir: Path
) -> None:
    plan = _plan(tmp_path, sample_dir, [], start_from="champion")
    optim = plan.config.optim
    assert plan.report["training"]["start_from"] == "champion"
    assert optim.epochs == RetrainOptions(registry=tmp_path).continue_epochs == 1.0  # not the recipe's 6
    assert optim.learning_rate == 1.0e-5 and optim.head_learning_rate == 1.0e-4  # the recipe's x 0.1
    assert optim.head_init == "grow" and plan.config.model.base_model == str(tmp_path / "champion")

    chosen = _plan(tmp_path, sample_dir, [], start_from="champion", continue_epochs=3.0)
    assert chosen.config.optim.epochs == 3.0 and chosen.report["training"]["epochs"] == 3.0


def test_an_explicit_epochs_override_wins_and_from_the_base_the_recipe_keeps_its_epochs(
    tmp_path: Path, sample_dir: Path
) -> None:
    explicit = _plan(
        tmp_path, sample_dir, ["optim.epochs=2", "optim.learning_rate=3e-5"], start_from="champion"
    )
    assert explicit.config.optim.epochs == 2.0 and explicit.config.optim.learning_rate == 3e-5
    base = _plan(tmp_path, sample_dir, [], start_from="base")
    assert base.report["training"]["start_from"] == "base" and base.config.optim.epochs == 6.0
    assert base.config.optim.learning_rate == 1.0e-4 and base.config.model.base_model == "base"
