"""CLIPA ViT-L/16: the towers of flip_l16, pre-trained at 112 px with 32 text tokens (12.8B samples), then fine-tuned at
224 px with 32 text tokens (512M samples) -- two stages of one run (see clipa_common.py for the recipe and
stages.py for how it runs).  ``--config clipa_l16:RES`` or ``clipa_l16:RES_TEXTLEN`` picks another pre-training
resolution / text length (e.g. ``clipa_h14:70_8``, ``clipa_l16:160_16``).

    laionprep train --config clipa_l16 --workdir W --config.data.source=gs://BUCKET/laion400m \
        --config.stages.low_res.data.source=gs://BUCKET/laion400m_160 \
        --config.tokenizer.vocab=bert_uncased_vocab.txt

``laion400m_160``: ``laionprep reshard ... --image-size 160`` of the same download, which the low-resolution stage
reads (decoding 160 px images instead of 480 px ones); the fine-tune and the zero-shot evaluation read full
resolution.
"""
from laionprep.train_ref.configs import clipa_common, flip_l16


def get_config(arg=None):
    res, text_len = clipa_common.parse_arg(arg, 112, 32)
    return clipa_common.make_clipa(flip_l16.get_config(), res, text_len)
