"""Tiny stand-ins for hub models, built locally: no download, seconds on a CPU.

`build_tiny_llama` writes a random LlamaForCausalLM (the shape of a hub base model) with a
byte-level BPE tokenizer trained on the texts it is given. The tests serve it with vLLM and fine-tune
it; the QLoRA benchmark takes its tokenizer and swaps in Llama-3.2-1B's shapes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path


def dataset_texts(directory: Path, splits: Iterable[str] = ("train", "test")) -> list[str]:
    """The `text` column of a CSV dataset directory's `<split>.csv` files, in file order."""
    texts: list[str] = []
    for split in splits:
        with (Path(directory) / f"{split}.csv").open(newline="") as fh:
            texts += [row["text"] for row in csv.DictReader(fh)]
    return texts


def build_tiny_llama(
    path: Path, texts: Iterable[str], *, hidden_size: int = 64, layers: int = 2, vocab_size: int = 600
) -> Path:
    """A random LlamaForCausalLM + a byte-level BPE tokenizer trained on `texts`, with Llama 3's
    special-token names, saved to `path` (returned)."""
    import torch
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
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
    fast.save_pretrained(path)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,  # head_dim 32 at hidden 64: a size vLLM's CPU attention supports
        num_key_value_heads=1,
        max_position_embeddings=256,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
        architectures=["LlamaForCausalLM"],
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return Path(path)
