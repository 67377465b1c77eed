"""A Llama-style tokenizer for randomly initialised models (no download).

Published checkpoints ship Llama-2's tokenizer files; a fresh model needs one with the same id
layout: ``<unk>`` = 0, ``<s>`` = 1 (BOS, prepended), ``</s>`` = 2, ``▁`` = 3 (OpenVLA appends the
id of ``▁`` after ``Out:``, 29871 in Llama-2), words, then filler tokens up to ``vocab_size``; the
last ``n_bins`` ids are the action tokens and ``<PAD>`` is added at id ``vocab_size``, as in OpenVLA.
It is a ``tokenizers`` WordLevel model wrapped in ``PreTrainedTokenizerFast`` and saved as
``tokenizer.json`` + ``tokenizer_config.json``.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<unk>", "<s>", "</s>", "\u2581")
WORDS = """in out what action should the robot take to a an of on into onto from and then it its
pick place put up down move push pull lift open close turn stack insert red green blue yellow
cube block bowl plate cup box drawer door left right top bottom front back table basket""".split()


def build_tokenizer(vocab_size: int, n_bins: int = 256) -> PreTrainedTokenizerFast:
    """A tokenizer with ``vocab_size`` base ids (words first, action slots last) plus ``<PAD>``."""
    words = [w for w in dict.fromkeys(WORDS) if w not in SPECIALS]
    if len(SPECIALS) + len(words) + n_bins > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is too small for the words and {n_bins} action tokens")
    vocab = [*SPECIALS, *words]
    vocab += [f"<extra_{i}>" for i in range(vocab_size - len(vocab))]
    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(vocab)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), " ")])
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="left"
    )
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    return tokenizer
