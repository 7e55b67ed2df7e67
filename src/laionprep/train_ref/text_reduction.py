"""CLIPA's text token reduction (Li, Wang, Xie, *An Inverse Scaling Law for CLIP Training*): train on ``K``
text tokens instead of the full caption.

``config.text_reduction.strategy`` picks which tokens of a tokenized caption survive; ``config.text_reduction.length``
is ``K``, the number of tokens the text tower sees, counting ``[CLS]`` and ``[SEP]``.  Of the caption's ``n``
word pieces between ``[CLS]`` and ``[SEP]`` (at most ``tokenizer.max_len - 2``: the tokenizer truncates first),
exactly ``min(n, K - 2)`` are kept, always in their original order, and the result is ``[CLS] kept... [SEP]``
padded to ``K``:

* ``truncate`` -- the first ``K - 2`` pieces;
* ``random`` -- ``K - 2`` pieces sampled uniformly without replacement;
* ``block`` -- a contiguous run of ``K - 2`` pieces starting at a uniformly random offset;
* ``syntax`` -- pieces ranked by the part of speech of their word: nouns first, then adjectives, then verbs, then
  everything else; within a class, earlier words first.  The first ``K - 2`` pieces of that ranking are kept.
* ``none`` -- no reduction (the caption as the tokenizer made it).

Part of speech (``syntax``) comes from the WordNet database Debian ships in the ``wordnet-base`` package
(``/usr/share/wordnet``: ``index.{noun,adj,verb,adv}``, the ``*.exc`` irregular forms and ``cntlist.rev``'s
SemCor sense counts); ``text_reduction.wordnet_dir`` points elsewhere.  Nothing is downloaded.  Words map to
tokens as follows: a word is a vocabulary piece plus the ``##`` continuation pieces after it, and every piece of a
word gets the class of the word's first piece, so pieces of a word rank together.  The class of a vocabulary entry
is looked up once per vocabulary (a table indexed by token id, used inside tf.data): closed-class English words
(articles, pronouns, prepositions, conjunctions, auxiliaries ...) are "other"; otherwise the word or its base form
(WordNet's morphy: the exception lists, then the regular suffix rules, e.g. ``circles`` -> ``circle``, ``drawn`` ->
``draw``) is looked up as noun, adjective and verb; a word found under several parts of speech takes the one whose
senses are tagged most often in SemCor (``cntlist.rev``), then the one with the most senses, then noun > adjective
> verb.  Adverbs, numbers, punctuation and unknown words are "other".  This is a context-free, most-frequent-sense
tagger: CLIPA tags in context with NLTK's tagger, which needs a downloaded model.

Random choices (``random``, ``block``) are stateless functions of ``(seed, batch counter)``, like the rest of the
input pipeline, so a checkpointed iterator replays them exactly.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Sequence

import numpy as np

from laionprep._env import import_tf
from laionprep.errors import DataError, UsageError

STRATEGIES = ("none", "truncate", "random", "block", "syntax")
NOUN, ADJ, VERB, OTHER = 0, 1, 2, 3
CLASS_NAMES = ("noun", "adjective", "verb", "other")
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
WORDNET_PACKAGE = "wordnet-base"

# Closed-class words: never nouns/adjectives/verbs for ranking, although WordNet lists some ("a" = vitamin A,
# "in" = inch, "can" = a container, "will" = testament ...).
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every either neither no all both half few many much more most several
such what which whose whatever whichever i me my mine myself you your yours yourself yourselves he him his himself
she her hers herself it its itself we us our ours ourselves they them their theirs themselves one ones who whom
someone somebody something anyone anybody anything everyone everybody everything nobody nothing none
about above across after against along amid among around as at before behind below beneath beside besides between
beyond but by despite down during except for from in inside into like near of off on onto out outside over past
per since than through throughout till to toward towards under underneath unlike until up upon via with within
without and or nor so yet if because although though while whereas whether unless once whenever wherever
am is are was were be been being have has had having do does did doing done will would shall should can could
may might must ought not n't nt s t d ll m re ve o y also too very just only even ever still then there here
now when where why how again further else quite rather really almost
""".split())

_POS_FILES = {NOUN: "noun", ADJ: "adj", VERB: "verb"}
# WordNet's morphy detachment rules (suffix, replacement) per part of speech.
_MORPHY_RULES = {
    NOUN: [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
           ("ies", "y")],
    VERB: [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    ADJ: [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
}
# cntlist.rev sense keys: lemma%ss_type:... with ss_type 1 noun, 2 verb, 3 adjective, 4 adverb, 5 satellite adj.
_SS_TYPE = {"1": NOUN, "2": VERB, "3": ADJ, "5": ADJ}


def check_config(tcfg, max_len: int) -> None:
    """Validate ``config.text_reduction`` against the tokenizer's ``max_len``."""
    strategy = str(tcfg.strategy)
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown text reduction strategy {strategy!r}", where="--config.text_reduction.strategy",
                         fix=f"use one of {', '.join(STRATEGIES)}")
    if strategy == "none":
        return
    k = int(tcfg.length)
    if k < 3 or k > max_len:
        raise UsageError(f"text_reduction.length={k} must be between 3 ([CLS] + 1 token + [SEP]) and "
                         f"tokenizer.max_len={max_len}", where="--config.text_reduction.length",
                         fix=f"set --config.text_reduction.length to 3..{max_len}")


def enabled(config) -> bool:
    return str(config.text_reduction.strategy) != "none"


def text_length(config) -> int:
    """Tokens per caption the text tower trains on: ``text_reduction.length`` when reducing, else max_len."""
    return int(config.text_reduction.length) if enabled(config) else int(config.tokenizer.max_len)


# ------------------------------------------------------------------------------------------------ WordNet


@functools.lru_cache(maxsize=4)
def load_wordnet(wordnet_dir: str) -> dict:
    """``{'index': {pos: {lemma: synset_count}}, 'exc': {pos: {form: [lemmas]}}, 'tags': {(lemma, pos): count}}``
    from a WordNet database directory (Debian: ``wordnet-base``, ``/usr/share/wordnet``)."""
    missing = [f"index.{n}" for n in ("noun", "adj", "verb")
               if not os.path.isfile(os.path.join(wordnet_dir, f"index.{n}"))]
    if missing:
        raise UsageError(f"the WordNet database is not in {wordnet_dir} (no {', '.join(missing)}): the 'syntax' text "
                         "reduction needs it for part-of-speech classes", where="--config.text_reduction.wordnet_dir",
                         fix=f"install Debian's {WORDNET_PACKAGE} package (apt-get install {WORDNET_PACKAGE}, or "
                             f"`make install`), or point --config.text_reduction.wordnet_dir at a WordNet 3 'dict' "
                             "directory")
    index: dict[int, dict[str, int]] = {}
    exc: dict[int, dict[str, list[str]]] = {}
    for pos, name in _POS_FILES.items():
        entries: dict[str, int] = {}
        path = os.path.join(wordnet_dir, f"index.{name}")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                if not line or line[0] == " ":  # the licence header
                    continue
                parts = line.split()
                if len(parts) < 3 or not parts[2].isdigit():
                    raise DataError(f"{path} line {line_no} is not a WordNet index line: {line[:60]!r}", where=path,
                                    fix=f"reinstall {WORDNET_PACKAGE}")
                if "_" not in parts[0]:  # multi-word lemmas never match one word piece
                    entries[parts[0]] = int(parts[2])
        index[pos] = entries
        forms: dict[str, list[str]] = {}
        epath = os.path.join(wordnet_dir, f"{name}.exc")
        if os.path.isfile(epath):
            with open(epath, encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2:
                        forms.setdefault(parts[0], []).extend(parts[1:])
        exc[pos] = forms
    tags: dict[tuple[str, int], int] = {}
    cpath = os.path.join(wordnet_dir, "cntlist.rev")
    if os.path.isfile(cpath):
        with open(cpath, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) != 3 or "%" not in parts[0]:
                    continue
                lemma, rest = parts[0].split("%", 1)
                pos = _SS_TYPE.get(rest[:1])
                if pos is not None and parts[2].isdigit():
                    tags[(lemma, pos)] = tags.get((lemma, pos), 0) + int(parts[2])
    return {"index": index, "exc": exc, "tags": tags}


def _base_forms(word: str, pos: int, wn: dict) -> list[str]:
    """WordNet lemmas ``word`` can be an inflection of as ``pos`` (itself, its exceptions, morphy's suffix rules)."""
    idx = wn["index"][pos]
    out = [word] if word in idx else []
    out += [w for w in wn["exc"][pos].get(word, ()) if w in idx]
    for suffix, repl in _MORPHY_RULES[pos]:
        if word.endswith(suffix) and len(word) > len(suffix):
            cand = word[: len(word) - len(suffix)] + repl
            if cand in idx:
                out.append(cand)
    if pos == ADJ and not out:
        return []
    return list(dict.fromkeys(out))


_WORD = re.compile(r"^[a-z][a-z'\-]*$")


def word_class(word: str, wn: dict) -> int:
    """NOUN / ADJ / VERB / OTHER for one lower-cased word (see the module docstring for the rules)."""
    word = word.lower()
    if word in FUNCTION_WORDS or not _WORD.match(word):
        return OTHER
    best = None
    for pos in (NOUN, ADJ, VERB):  # the order breaks remaining ties: noun > adjective > verb
        lemmas = _base_forms(word, pos, wn)
        if not lemmas:
            continue
        tagged = max(wn["tags"].get((lem, pos), 0) for lem in lemmas)
        senses = max(wn["index"][pos][lem] for lem in lemmas)
        key = (tagged, senses)
        if best is None or key > best[0]:
            best = (key, pos)
    return OTHER if best is None else best[1]


@functools.lru_cache(maxsize=8)
def _vocab_tables(vocab: tuple[str, ...], wordnet_dir: str) -> tuple[np.ndarray, np.ndarray]:
    wn = load_wordnet(wordnet_dir)
    classes = np.full(len(vocab), OTHER, np.int32)
    continuation = np.zeros(len(vocab), bool)
    for i, piece in enumerate(vocab):
        if piece.startswith("##"):
            continuation[i] = True
        elif not (piece.startswith("[") and piece.endswith("]")):
            classes[i] = word_class(piece, wn)
    return classes, continuation


def vocab_classes(vocab: Sequence[str], wordnet_dir: str = DEFAULT_WORDNET_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Per token id: its word class (int32, NOUN..OTHER; continuation and special pieces OTHER) and whether it is a
    ``##`` continuation piece.  Built once per vocabulary (about a second for BERT's 30,522 pieces)."""
    return _vocab_tables(tuple(vocab), wordnet_dir)


# ---------------------------------------------------------------------------------------------- reduction


class TextReducer:
    """``reducer(ids, counter) -> ids[:, :K]``: int32 ``[B, max_len]`` tokenized captions (``[CLS] ... [SEP]``,
    0-padded) -> ``[B, K]`` reduced ones; usable inside tf.data.  ``counter`` (int64 scalar) and ``seed`` make the
    random strategies reproducible."""

    def __init__(self, strategy: str, length: int, *, cls_id: int, sep_id: int, pad_id: int = 0, seed: int = 0,
                 vocab: Sequence[str] = (), wordnet_dir: str = DEFAULT_WORDNET_DIR):
        if strategy not in STRATEGIES or strategy == "none":
            raise UsageError(f"unknown text reduction strategy {strategy!r}", where="--config.text_reduction.strategy",
                             fix=f"use one of {', '.join(s for s in STRATEGIES if s != 'none')}")
        if length < 3:
            raise UsageError(f"text_reduction.length={length} leaves no token between [CLS] and [SEP]",
                             where="--config.text_reduction.length", fix="use at least 3")
        self.strategy, self.length = strategy, int(length)
        self.cls_id, self.sep_id, self.pad_id, self.seed = int(cls_id), int(sep_id), int(pad_id), int(seed)
        self.classes = self.continuation = None
        if strategy == "syntax":
            if not vocab:
                raise ValueError("the syntax strategy needs the vocabulary")
            self.classes, self.continuation = vocab_classes(vocab, wordnet_dir)

    def _word_classes(self, ids, content):
        """Per position: the class of the word the piece belongs to (its first piece's class)."""
        tf = import_tf()
        L = tf.shape(ids)[1]
        pos = tf.range(L)[None, :]
        is_cont = tf.gather(tf.constant(self.continuation), ids)
        start = content & tf.logical_not(is_cont)
        start = start | (content & tf.equal(pos, 1))  # a caption cannot begin mid-word
        word = tf.maximum(tf.cumsum(tf.cast(start, tf.int32), axis=1) - 1, 0)  # index of the word of each piece
        start_pos = tf.argsort(tf.where(start, pos, L + pos), axis=1, stable=True)  # word starts first, in order
        first = tf.gather(start_pos, word, batch_dims=1)  # position of each piece's word start
        return tf.gather(tf.gather(tf.constant(self.classes), ids), first, batch_dims=1)

    def __call__(self, ids, counter=0):
        tf = import_tf()
        ids = tf.convert_to_tensor(ids, tf.int32)
        if ids.shape[1] is not None and ids.shape[1] < self.length:
            raise UsageError(f"text_reduction.length={self.length} is longer than the tokenized captions "
                             f"({ids.shape[1]})", where="--config.text_reduction.length",
                             fix=f"use at most tokenizer.max_len={ids.shape[1]}")
        B, L = tf.shape(ids)[0], tf.shape(ids)[1]
        k = self.length - 2
        pos = tf.broadcast_to(tf.range(L)[None, :], [B, L])
        n_real = tf.reduce_sum(tf.cast(tf.not_equal(ids, self.pad_id), tf.int32), axis=1, keepdims=True)
        content = (pos >= 1) & (pos < n_real - 1)  # between [CLS] and [SEP]
        n_content = tf.maximum(n_real - 2, 0)
        Lf = tf.cast(L, tf.float32)
        seed = tf.random.experimental.stateless_fold_in(tf.constant([self.seed, 7_919], tf.int64),
                                                        tf.cast(counter, tf.int64))
        if self.strategy == "truncate":
            score = tf.cast(pos, tf.float32)
        elif self.strategy == "random":
            score = tf.random.stateless_uniform([B, L], seed=seed)
        elif self.strategy == "block":
            u = tf.random.stateless_uniform([B, 1], seed=seed)
            span = tf.maximum(n_content - k, 0) + 1  # possible start offsets
            start = 1 + tf.minimum(tf.cast(u * tf.cast(span, tf.float32), tf.int32), span - 1)
            inside = (pos >= start) & (pos < start + k)
            score = tf.cast(pos, tf.float32) + tf.where(inside, 0.0, Lf)
        else:  # syntax: class first, then position
            score = tf.cast(self._word_classes(ids, content), tf.float32) * Lf + tf.cast(pos, tf.float32)
        score = tf.where(content, score, 1e9)
        chosen = tf.argsort(score, axis=1, stable=True)[:, :k]  # positions, best first
        m = tf.minimum(n_content, k)  # [B, 1]: how many are really kept
        rank = tf.range(k)[None, :]
        chosen = tf.sort(tf.where(rank < m, chosen, L), axis=1)  # original order; dropped slots -> L (padding)
        padded = tf.concat([ids, tf.fill([B, 1], self.pad_id)], axis=1)
        kept = tf.gather(padded, chosen, batch_dims=1)  # [B, k]
        body = tf.concat([kept, tf.fill([B, 1], self.pad_id)], axis=1)  # [B, k + 1]
        body = tf.where(tf.equal(tf.range(k + 1)[None, :], m), self.sep_id, body)
        out = tf.concat([tf.fill([B, 1], self.cls_id), body], axis=1)
        return out


def reducer_from_config(config, tokenizer) -> TextReducer | None:
    """The run's :class:`TextReducer` (None for ``strategy='none'``); checks the config first."""
    tcfg = config.text_reduction
    check_config(tcfg, int(config.tokenizer.max_len))
    if str(tcfg.strategy) == "none":
        return None
    if not hasattr(tokenizer, "cls_id"):  # CLIPPO's text renderer: captions become pixels, there are no token ids
        raise UsageError(f"text_reduction.strategy={tcfg.strategy} needs token ids, but this config renders "
                         "captions as images (CLIPPO)", where="--config.text_reduction.strategy",
                         fix="use --config.text_reduction.strategy=none with rendered text (shorten rendered "
                             "captions with the renderer's size instead), or train a tokenized model")
    return TextReducer(str(tcfg.strategy), int(tcfg.length), cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                       pad_id=tokenizer.pad_id, seed=int(config.seed), vocab=tokenizer.vocab,
                       wordnet_dir=str(tcfg.wordnet_dir))


class _ReducedTokenizer:
    """A tokenizer whose eager ``__call__`` returns reduced ids (zero-shot prompts of a reduced-text run)."""

    def __init__(self, tokenizer, reducer: TextReducer):
        self.tokenizer, self.reducer = tokenizer, reducer
        self.vocab, self.vocab_size = tokenizer.vocab, tokenizer.vocab_size

    def __call__(self, captions: Sequence[str]):
        return self.reducer(self.tokenizer.tokenize(list(captions)), 0).numpy()


def eval_tokenizer(config, tokenizer):
    """The tokenizer zero-shot prompts go through: with text reduction on, prompts are reduced to the same length
    as the training captions (CLIPA evaluates its pre-trained models that way) -- by the run's strategy when it is
    deterministic (``truncate``, ``syntax``), by truncation for ``random`` / ``block``."""
    reducer = reducer_from_config(config, tokenizer)
    if reducer is None:
        return tokenizer
    if reducer.strategy in ("random", "block"):
        reducer = TextReducer("truncate", reducer.length, cls_id=reducer.cls_id, sep_id=reducer.sep_id,
                              pad_id=reducer.pad_id)
    return _ReducedTokenizer(tokenizer, reducer)
