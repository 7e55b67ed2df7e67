"""Reference FLIP trainer (JAX/Flax linen) for the datasets laionprep builds, with zero-shot evaluation.

Entry points (what the CLI verbs and ``laionprep demo`` call):

* ``config_lib.load_config(path_or_name, overrides)`` -- a config file + ``--config.a.b=value`` overrides;
* ``runner.train_and_evaluate(config, workdir)`` -- train / resume (one run or CLIPA's stages), zero-shot at the end;
* ``runner.evaluate(config, workdir)`` -- zero-shot top-1/top-5 of a run's newest checkpoint;
* ``tokenizer.learn_vocab(source, vocab_size, output)`` -- a WordPiece vocabulary from a dataset's captions;
* ``runner.train_demo(data, eval_data, workdir)`` -- flip_tiny on ``data`` + zero-shot on ``eval_data``.

Modules, top to bottom (each imports only modules below it; docs/train_ref.md draws the layers): ``runner`` ->
``stages`` -> ``train`` -> ``evaluate``, ``optim`` -> ``variants`` (the text side and model a config picks) ->
``clippo``, ``models`` -> ``pos_embed`` -> ``checkpointing``; beside them ``flops``, ``input_pipeline``,
``tokenizer``, ``text_reduction``, ``text_render``, ``runtime``, ``config_lib``.

Submodules import JAX / TensorFlow; this package module does not, so importing it is cheap.
"""
from __future__ import annotations

import importlib

__all__ = ["runner", "stages", "train", "evaluate", "optim", "variants", "flops", "clippo", "models", "pos_embed",
           "checkpointing", "input_pipeline", "tokenizer", "text_reduction", "text_render", "runtime", "config_lib"]


def __getattr__(name):  # lazy submodules: `from laionprep import train_ref; train_ref.train.train_and_evaluate(...)`
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(name)
