"""Shared fixtures: the sample dataset, a tiny random Llama with a locally trained tokenizer."""

from __future__ import annotations

import os
from collections.abc import Iterator
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

    from serving.registry import Registry
    from training.config import build_config
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


@pytest.fixture(scope="session")
def minilm_model(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """A MiniLM classifier exported by the real entry point: linear-probe head + 4 full steps on
    the sample data, so its answers are confident enough for vLLM in half precision (on CPUs
    with native bf16) to agree with fp32 transformers."""
    from training.config import build_config
    from training.train import train

    out = tmp_path_factory.mktemp("minilm") / "minilm-sample"
    config = {
        "model": {"method": "full", "max_length": 64},
        "data": {"dataset": str(sample_dir)},
        "optim": {"max_steps": 4, "batch_size": 16, "head_init": "linear_probe"},
        "output_dir": str(out),
    }
    train(build_config(config), progress=False)
    return out


@pytest.fixture(scope="session")
def router_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported MiniLM classifier for the sample dataset (4 steps: about 30 s)."""
    from training.config import build_config
    from training.train import train

    out = tmp_path_factory.mktemp("router-model") / "model"
    config = build_config(
        {
            "data": {"dataset": str(SAMPLE)},
            "optim": {"max_steps": 4, "head_init": "random"},
            "output_dir": str(out),
        }
    )
    train(config, progress=False)
    return out


# ------------------------------------------------ an OpenAI-compatible chat server (`vllm serve`)

SERVED = "tiny-chat"
API_KEY = "secret"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vllm serve` on a tiny random causal Llama with a chat template, behind --api-key, started
    once per session; yields the /v1 base URL. Structured outputs compact (no free whitespace): a
    random model would otherwise happily fill max_tokens with spaces inside the JSON."""
    import json

    from support import vllm_server

    model_dir = build_tiny_llama(tmp_path_factory.mktemp("tiny-chat"))
    config = json.loads((model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 2048  # RoPE: any length works; the prompts need ~1k
    (model_dir / "config.json").write_text(json.dumps(config))
    template = model_dir / "chat_template.jinja"
    template.write_text(CHAT_TEMPLATE)
    args = [
        "--served-model-name", SERVED, "--api-key", API_KEY, "--chat-template", str(template),
        "--max-model-len", "2048", "--gpu-memory-utilization", "0.1", "--enforce-eager", "--seed", "0",
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]  # fmt: skip
    with vllm_server(model_dir, args, model_dir / "server.log") as url:
        yield f"{url}/v1"


def served_requests(base_url: str) -> float:
    """Requests a `vllm serve` finished, from its Prometheus /metrics (all finish reasons)."""
    import httpx

    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total")
    )
