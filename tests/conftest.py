"""Shared fixtures: the sample dataset, a tiny random Llama with a locally trained tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _sample_texts() -> list[str]:
    import csv

    texts = []
    for name in ("train.csv", "test.csv"):
        with open(SAMPLE / name, newline="") as fh:
            texts += [row["text"] for row in csv.DictReader(fh)]
    return texts


def build_tiny_llama(path: Path, *, hidden_size: int = 64, layers: int = 2, vocab_size: int = 600) -> Path:
    """A random LlamaForCausalLM (the shape of a hub base model) + a byte-level BPE tokenizer
    trained here on the sample texts, with Llama 3's special-token names."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[bos, eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_sample_texts(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
    fast.save_pretrained(path)

    import torch

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,  # head_dim 32: a size vLLM's CPU attention supports
        num_key_value_heads=1,
        max_position_embeddings=256,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
        architectures=["LlamaForCausalLM"],
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture()
def shared_datasets(monkeypatch: pytest.MonkeyPatch) -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} not present")
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(SHARED_DATASETS))
    return SHARED_DATASETS


WEAK = "upgrade_device"  # the intent the weak champion barely saw


def read_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def build_weak_champion(root: Path) -> tuple[object, list[str]]:
    """A MiniLM champion trained on the sample data with only 2 `upgrade_device` examples,
    registered as champion; returns (registry, the 22 upgrade_device texts it never saw)."""
    import csv

    from training.config import build_config
    from training.registry import Registry
    from training.train import train

    rows = read_rows(SAMPLE / "train.csv")
    weak = [r for r in rows if r["label"] == WEAK]
    others = [r for r in rows if r["label"] != WEAK]
    data = root / "data"
    data.mkdir()

    def write(name: str, items: list[dict[str, str]]) -> None:
        with (data / name).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows((r["text"], r["label"]) for r in items)

    write("train.csv", [r for i, r in enumerate(others) if i % 8] + weak[:2])
    write("validation.csv", [r for i, r in enumerate(others) if i % 8 == 0] + weak[:1])
    write("test.csv", read_rows(SAMPLE / "test.csv"))
    cfg = build_config(
        {
            "data": {"dataset": str(data)},
            "optim": {"max_steps": 24, "batch_size": 16, "learning_rate": 1e-4, "head_learning_rate": 1e-3},
            "output_dir": str(root / "champion"),
        }
    )
    train(cfg, progress=False)
    registry = Registry(root / "registry")
    registry.register(root / "champion", alias="champion")
    return registry, [r["text"] for r in weak[2:]]
