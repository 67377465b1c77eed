"""Instruction tokenizer: a ``transformers`` fast tokenizer over a fixed manipulation vocabulary.

No download: a ``tokenizers`` WordLevel model over :data:`VOCABULARY`, wrapped in
``PreTrainedTokenizerFast`` so it saves and loads with ``save_pretrained`` / ``from_pretrained``
next to the model. Text is lowercased, punctuation becomes a separator, words split on
whitespace; unknown words map to ``[UNK]``. Ids: ``[PAD]`` = 0, ``[UNK]`` = 1, then the words.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"

_WORDS = """
a an the this that these those it its of to from in into on onto at by with without for and or
then next after before while until up down over under above below between behind front back
inside outside near far left right top bottom middle center centre side edge corner here there
pick place put move push pull lift lower raise drop grasp grab release hold carry take bring
open close turn rotate twist slide stack unstack insert remove press flip pour wipe hang fold
reach approach go stop stay keep set make let
red green blue yellow orange purple pink black white gray grey brown cyan magenta
small large big little tall short long wide thin round square flat empty full first second
third last other same one two three four five six seven eight nine ten
cube cubes block blocks box boxes bowl bowls plate plates cup cups mug mugs can cans bottle
bottles ball balls object objects item items target goal bin bins basket tray drawer drawers
door doors cabinet shelf table counter stove microwave oven sink lid handle knob button switch
peg hole pot pan spoon fork knife book books caddy rack region area zone spot marker
gripper arm hand robot
please carefully slowly quickly gently
""".split()

VOCABULARY: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, *dict.fromkeys(_WORDS))
"""Every token of the instruction vocabulary, in id order."""


def build_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """A fresh tokenizer over :data:`VOCABULARY` that pads and truncates to ``max_length`` tokens."""
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(VOCABULARY)}, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), " ")])
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
    )
