"""Reference FLIP trainer (JAX/Flax linen) for the datasets laionprep builds, with zero-shot evaluation.

Entry points (what the CLI verbs and ``laionprep demo`` call):

* ``config_lib.load_config(path_or_name, overrides)`` -- a config file + ``--config.a.b=value`` overrides;
* ``train.train_and_evaluate(config, workdir)`` -- train / resume, zero-shot at the end; returns metrics;
* ``evaluate.evaluate(config, workdir)`` -- zero-shot top-1/top-5 of a run's newest checkpoint;
* ``tokenizer.learn_vocab(source, vocab_size, output)`` -- a WordPiece vocabulary from a dataset's captions;
* ``train.train_demo(data, eval_data, workdir)`` -- flip_tiny on ``data`` + zero-shot on ``eval_data``.

CLIPA (reduced image and text tokens, staged schedules) lives in ``text_reduction``, ``pos_embed`` and ``stages``.

Submodules import JAX / TensorFlow; this package module does not, so importing it is cheap.
"""
from __future__ import annotations

import importlib

__all__ = ["config_lib", "input_pipeline", "tokenizer", "models", "train", "evaluate", "checkpointing", "runtime",
           "text_reduction", "pos_embed", "stages"]


def __getattr__(name):  # lazy submodules: `from laionprep import train_ref; train_ref.train.train_and_evaluate(...)`
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(name)
