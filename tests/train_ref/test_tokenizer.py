"""WordPiece tokenizer: a vocabulary learned from the dataset's own captions, BERT-uncased tokenisation."""
from __future__ import annotations

import pytest

from laionprep.errors import DataError, UsageError
from laionprep.train_ref import tokenizer


def test_learned_vocab_has_reserved_tokens_and_caption_words(vocab_file):
    vocab = tokenizer.load_vocab(vocab_file)
    assert vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    for word in ("red", "circle", "triangle", "photo", "yellow", "purple", "star", "cross"):
        assert word in vocab
    assert any(t.startswith("##") for t in vocab)  # word pieces to spell unseen words
    assert len(vocab) <= 300
    assert len(set(vocab)) == len(vocab)


def test_tokenize_cls_sep_pad_truncate_lowercase(vocab_file):
    vocab = tokenizer.load_vocab(vocab_file)
    tok = tokenizer.Tokenizer(vocab, max_len=8)
    ids = tok(["A Photo of a RED Circle", "a photo of a red circle", "", "a " * 20 + "star"])
    assert ids.shape == (4, 8) and ids.dtype.name == "int32"
    words = [vocab[i] for i in ids[1]]
    assert words == ["[CLS]", "a", "photo", "of", "a", "red", "circle", "[SEP]"]
    assert (ids[0] == ids[1]).all()  # lower-cased
    assert list(ids[2]) == [2, 3, 0, 0, 0, 0, 0, 0]  # empty caption: [CLS] [SEP] then padding (0)
    assert ids[3][0] == 2 and ids[3][-1] == 3 and 0 not in ids[3]  # truncated to max_len, still ends with [SEP]
    short = tokenizer.Tokenizer(vocab, max_len=32)(["red circle"])[0]
    assert list(short[:4]) == [2, vocab.index("red"), vocab.index("circle"), 3] and not short[4:].any()


def test_unseen_words_are_spelled_or_unknown(vocab_file):
    vocab = tokenizer.load_vocab(vocab_file)
    tok = tokenizer.Tokenizer(vocab, max_len=16)
    ids = tok(["a redd circle ☃"])[0]
    pieces = [vocab[i] for i in ids if i not in (0, 2, 3)]
    assert pieces[0] == "a" and "circle" in pieces
    assert any(p.startswith("##") for p in pieces)  # 'redd' -> red ##d (or similar)
    assert "[UNK]" in pieces  # the snowman is not in a vocabulary learned from these captions


def test_learn_vocab_writes_file(tmp_path, flip_data):
    out = tmp_path / "sub" / "v.txt"
    vocab = tokenizer.learn_vocab(flip_data, 200, str(out), max_examples=200)
    assert out.read_text().splitlines() == vocab


def test_bad_vocab_files(tmp_path):
    with pytest.raises(UsageError):
        tokenizer.load_vocab(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("hello\nworld\n")
    with pytest.raises(DataError):
        tokenizer.load_vocab(str(bad))
    with pytest.raises(UsageError):
        tokenizer.learn_vocab(str(tmp_path), 10)


def test_existing_bert_style_vocab_file_is_usable(tmp_path):
    v = tmp_path / "vocab.txt"
    v.write_text("\n".join(["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                                             "a", "cat", "##s", "dog"]) + "\n")
    tok = tokenizer.Tokenizer(tokenizer.load_vocab(str(v)), max_len=6)
    vocab = tok.vocab
    assert [vocab[i] for i in tok(["A cats"])[0]] == ["[CLS]", "a", "cat", "##s", "[SEP]", "[PAD]"]
