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


def build_tiny_bert_classifier(
    path: Path,
    texts: Iterable[str],
    labels: Iterable[str],
    *,
    hidden_size: int = 32,
    layers: int = 2,
    vocab_size: int = 400,
    max_length: int = 32,
    seed: int = 0,
) -> Path:
    """A random mean-pooling BERT classifier over `labels` with a WordPiece tokenizer trained on
    `texts`, saved as `switchboard train` exports one (config.json with the label map and pooling,
    tokenizer.json, config.yaml's max length) to `path` (returned): the ONNX engine's fast tests."""
    import json

    import torch
    import yaml
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, PreTrainedTokenizerFast

    from training.mean_pool_bert import MeanPoolBertForSequenceClassification
    from training.modeling import POOLING_CONFIG_KEY

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    path = Path(path)
    fast.save_pretrained(path)

    names = list(labels)
    torch.manual_seed(seed)
    config = BertConfig(  # type: ignore[call-arg]  # PretrainedConfig's kwargs
        vocab_size=len(fast),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=max(64, max_length + 2),
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        pad_token_id=fast.pad_token_id,
        architectures=["BertForSequenceClassification"],
    )
    setattr(config, POOLING_CONFIG_KEY, "mean")
    MeanPoolBertForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    config_file = path / "config.json"
    saved = json.loads(config_file.read_text())
    saved["architectures"] = ["BertForSequenceClassification"]  # the stock name, as the export writes
    config_file.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    (path / "config.yaml").write_text(yaml.safe_dump({"model": {"max_length": max_length}}))
    return path
