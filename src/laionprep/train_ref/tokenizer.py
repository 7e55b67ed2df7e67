"""WordPiece text tokenizer (BERT-uncased style, like FLIP's ``tf_bert`` tokenizer), built on tensorflow-text.

No hub downloads: the vocabulary is either learned from the dataset's own captions with tensorflow-text's
``bert_vocab_from_dataset`` (:func:`learn_vocab`, the ``laionprep tokenizer`` verb) or read from an existing
vocab file with one token per line (for example the ``vocab.txt`` of BERT-base-uncased that FLIP uses).

A caption becomes ``[CLS] wordpieces... [SEP]`` truncated to ``max_len`` and padded with ``[PAD]`` = id 0.
Text is lower-cased with accents stripped (BERT's "uncased" normalisation).
"""
from __future__ import annotations

import os
from typing import Sequence

from laionprep._env import import_tf
from laionprep.errors import DataError, UsageError
from laionprep.train_ref import input_pipeline

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
RESERVED_TOKENS = [PAD, UNK, CLS, SEP, MASK]
BERT_PARAMS = dict(lower_case=True)


def learn_vocab(source: str, vocab_size: int, output: str | None = None, *, data_dir: str = "",
                split: str = "train", max_examples: int = 500_000, min_count: int = 2) -> list[str]:
    """Learn a WordPiece vocabulary of at most ``vocab_size`` tokens from the captions (``txt``) of ``source``.

    ``source`` is anything the input pipeline reads: a TFDS name (with ``data_dir``), a TFDS builder directory, a
    folder of ``*.tfrecord`` files (an img2dataset download or a reshard output) or a glob.  Reads at most
    ``max_examples`` captions; words seen fewer than ``min_count`` times are spelled with sub-word pieces.
    Writes the vocabulary to ``output`` (one token per line) when given, and returns it.
    """
    # tensorflow_text imports TensorFlow (~10 s): only when a vocabulary is learned, not when this module is.
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bvd

    if vocab_size < len(RESERVED_TOKENS) + 30:
        raise UsageError(f"--vocab-size {vocab_size} is too small", where="--vocab-size",
                         fix="use at least a few hundred (BERT uses 30522)")
    tf = import_tf()
    captions = input_pipeline.caption_dataset(source, data_dir=data_dir, split=split).take(max_examples)
    n = captions.reduce(0, lambda c, _: c + 1).numpy()
    if n == 0:
        raise DataError(f"no captions found in {source}", where=source,
                        fix="point --source at a dataset whose records have a 'txt' feature")
    vocab = bvd.bert_vocab_from_dataset(
        captions.batch(1024).prefetch(tf.data.AUTOTUNE), vocab_size=vocab_size, reserved_tokens=RESERVED_TOKENS,
        bert_tokenizer_params=BERT_PARAMS, learn_params=dict(lower_thresh=min_count))
    if output:
        write_vocab(vocab, output)
    return vocab


def write_vocab(vocab: Sequence[str], path: str) -> None:
    tf = import_tf()
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{path}.tmp{os.getpid()}"  # several processes of a multi-host run may write the same file
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("\n".join(vocab) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def load_vocab(path: str) -> list[str]:
    tf = import_tf()
    if not tf.io.gfile.exists(path):
        raise UsageError(f"vocabulary file not found: {path}", where="tokenizer.vocab",
                         fix="learn one with `laionprep tokenizer --source DATA --vocab-size N --output vocab.txt`")
    with tf.io.gfile.GFile(path, "r") as f:
        vocab = [line.rstrip("\n") for line in f]
    while vocab and vocab[-1] == "":
        vocab.pop()
    missing = [t for t in (PAD, UNK, CLS, SEP) if t not in vocab]
    if missing or vocab[0] != PAD:
        raise DataError(f"vocabulary {path} must start with {PAD} and contain {UNK}, {CLS}, {SEP} (missing: "
                        f"{', '.join(missing) or PAD + ' first'})", where=path,
                        fix="use a BERT-style vocab.txt or learn one with `laionprep tokenizer`")
    return vocab


class Tokenizer:
    """Batched caption -> int32 ``[batch, max_len]`` ids, usable inside ``tf.data`` (``tokenize``) or eagerly."""

    def __init__(self, vocab: Sequence[str], max_len: int = 32):
        import tensorflow_text as text  # imports TensorFlow: when a tokenizer is built, not with this module

        tf = import_tf()
        if max_len < 3:
            raise UsageError(f"tokenizer.max_len={max_len} leaves no room for text", where="--config.tokenizer.max_len")
        self.vocab = list(vocab)
        self.max_len = int(max_len)
        self.pad_id = self.vocab.index(PAD)
        self.cls_id = self.vocab.index(CLS)
        self.sep_id = self.vocab.index(SEP)
        # FastBertTokenizer keeps the vocabulary in a constant model buffer (no lookup-table resource), so a
        # tf.data iterator that contains it can be checkpointed.
        self._tok = text.FastBertTokenizer(vocab=self.vocab, token_out_type=tf.int32, unknown_token=UNK,
                                           lower_case_nfd_strip_accents=True)

    def __getstate__(self):  # FastBertTokenizer does not pickle: rebuilt from the vocabulary (Grain's workers)
        return {"vocab": self.vocab, "max_len": self.max_len}

    def __setstate__(self, state):
        self.__init__(state["vocab"], state["max_len"])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, captions):
        """``captions``: a 1-D string tensor.  Returns int32 ``[len(captions), max_len]``."""
        tf = import_tf()
        captions = tf.convert_to_tensor(captions, tf.string)
        ids = self._tok.tokenize(captions)[:, : self.max_len - 2]
        n = tf.shape(captions)[0]
        cls = tf.RaggedTensor.from_tensor(tf.fill([n, 1], tf.constant(self.cls_id, tf.int32)))
        sep = tf.RaggedTensor.from_tensor(tf.fill([n, 1], tf.constant(self.sep_id, tf.int32)))
        ids = tf.concat([cls, ids, sep], axis=1)
        return ids.to_tensor(default_value=self.pad_id, shape=[None, self.max_len])

    def __call__(self, captions: Sequence[str]):
        """Eager convenience: a list of strings -> numpy int32 ``[n, max_len]``."""
        return self.tokenize(list(captions)).numpy()


def tokenizer_from_config(config, workdir: str | None = None, *, learn_source: str = "", data_dir: str = "",
                          split: str = "train") -> Tokenizer:
    """The run's tokenizer.

    Order: ``workdir/vocab.txt`` if it exists (so a resumed or evaluated run always uses the vocabulary it was
    trained with); else ``config.tokenizer.vocab``; else learn one from ``learn_source`` and write it to
    ``workdir/vocab.txt``.
    """
    tf = import_tf()
    tcfg = config.tokenizer
    run_vocab = os.path.join(workdir, "vocab.txt") if workdir else None
    if run_vocab and tf.io.gfile.exists(run_vocab):
        vocab = load_vocab(run_vocab)
    elif tcfg.vocab:
        vocab = load_vocab(tcfg.vocab)
        if run_vocab:
            write_vocab(vocab, run_vocab)
    elif learn_source:
        vocab = learn_vocab(learn_source, tcfg.vocab_size, data_dir=data_dir, split=split,
                            max_examples=tcfg.learn_examples)
        if run_vocab:
            write_vocab(vocab, run_vocab)
    else:
        raise UsageError("no tokenizer vocabulary: neither --config.tokenizer.vocab nor a vocab.txt in the workdir",
                         where="--config.tokenizer.vocab",
                         fix="pass --config.tokenizer.vocab=vocab.txt (see `laionprep tokenizer`)")
    return Tokenizer(vocab, tcfg.max_len)
