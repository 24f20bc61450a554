"""QLoRA training speed and memory of the production recipe on the real Llama-3.2-1B architecture.

Run (GPU):  python benchmarks/qlora_gpu.py            -> "QLoRA on GPU" section of docs/BENCHMARKS.md
Smoke (CPU): python benchmarks/qlora_gpu.py --tiny    -> checks the script; writes nothing to docs

No weights can be downloaded here, so the model is Llama-3.2-1B's exact configuration with random
weights: speed and memory depend on the shapes, not the values. Texts are Banking77's training
queries (from $SWITCHBOARD_DATA_DIR or the sample set), tokenized by a byte-level BPE tokenizer
trained on the project's sample queries (the tests' recipe, `training.tiny_models`), so sequence
lengths are realistic. The recipe is configs/llama-3.2-1b-qlora.yaml
(4-bit NF4 + double quantization, LoRA r=16 on all linear layers, fp32 score head, bf16 compute).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.markdown import cpu_name, replace_section  # noqa: E402

LLAMA_32_1B = {  # meta-llama/Llama-3.2-1B config.json
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "vocab_size": 128256,
}


def build_base(path: Path, tiny: bool) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.tiny_models import build_tiny_llama, dataset_texts  # the tests' tokenizer recipe

    # tokenizer + tiny model (trained on the sample texts, as in the tests); replaced below unless --tiny
    build_tiny_llama(path, dataset_texts(REPO / "data" / "sample"))
    if tiny:
        return path
    config = LlamaConfig.from_pretrained(path)
    for key, value in LLAMA_32_1B.items():
        setattr(config, key, value)
    config.architectures = ["LlamaForCausalLM"]
    with torch.device("cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    return path


def measure(base: Path, dataset: str, steps: int, batch_size: int) -> dict[str, Any]:
    import torch

    from training.config import load_config
    from training.train import train

    cfg = load_config(
        REPO / "configs" / "llama-3.2-1b-qlora.yaml",
        [
            f"model.base_model={base}",
            f"data.dataset={dataset}",
            f"optim.max_steps={steps}",
            f"optim.batch_size={batch_size}",
            "optim.evals_per_epoch=1",
            "optim.early_stopping_patience=0",
            f"output_dir={base.parent / 'out'}",
        ],
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    facts = train(cfg, progress=True).metrics["training"]
    return {
        "steps": steps,
        "batch_size": batch_size,
        # non-pad tokens through the training loop (Trainer's count) over the loop's wall time
        "train_tokens_per_s": round(facts["input_tokens_seen"] / facts["train_loop_seconds"], 1),
        "peak_gpu_memory_mib": facts["peak_memory_mb"] if torch.cuda.is_available() else None,
        "device": facts["device"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: a smoke test of this script")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    data_dir = os.environ.get("SWITCHBOARD_DATA_DIR", str(REPO.parent / "shared" / "datasets"))
    dataset = (
        str(Path(data_dir) / "banking77")
        if Path(data_dir, "banking77").is_dir()
        else str(REPO / "data/sample")
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = build_base(Path(tmp) / "base", args.tiny)
        row = measure(base, dataset, 8 if args.tiny else args.steps, 8 if args.tiny else args.batch_size)
    print(json.dumps(row, indent=2))
    if args.tiny:
        return
    out = REPO / "benchmarks" / "results" / "qlora_gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    replace_section(
        REPO / "docs" / "BENCHMARKS.md",
        "qlora-gpu",
        "QLoRA on GPU: Llama-3.2-1B architecture",
        f"Command: `python benchmarks/qlora_gpu.py`; {row['device']} (host CPU: {cpu_name()}), "
        f"{time.strftime('%Y-%m-%d')}. Random weights in the exact Llama-3.2-1B shapes, 4-bit NF4 base, "
        f"LoRA r=16 on all linear layers, batch {row['batch_size']}, Banking77 texts.\n\n"
        "| training tokens/s | peak GPU memory |\n| --- | --- |\n"
        f"| {row['train_tokens_per_s']:,.0f} | {row['peak_gpu_memory_mib'] / 1024:.2f} GiB |\n",
    )


if __name__ == "__main__":
    main()
