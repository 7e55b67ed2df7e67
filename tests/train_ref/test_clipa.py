"""CLIPA: text token reduction (every strategy keeps exactly K tokens by its rules; syntax ranks by WordNet part of
speech), position embeddings across resolutions (learned ones interpolated when a checkpoint changes resolution,
sin-cos ones recomputed), staged schedules that cross their boundary and resume in the right stage, the bundled
configs, and clipa_tiny learning the demo data."""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flip_helpers import tiny_config, write_low_res_copy
from laionprep.errors import UsageError
from laionprep.train_ref import checkpointing, config_lib, models, pos_embed, runner, stages, text_reduction, train
from laionprep.train_ref import tokenizer as tokenizer_lib
from test_training import _losses, _subprocess

WORDS = [f"w{i}" for i in range(40)]
SYNTAX_WORDS = ("a the on of small green red dog field runs across sky ##scraper tall photo drawn circle is "
                "quickly and").split()


@functools.lru_cache(maxsize=None)
def _tok(max_len=32, words=tuple(WORDS)):
    return tokenizer_lib.Tokenizer(tokenizer_lib.RESERVED_TOKENS + list(words), max_len)


def _content(row, tok):
    """The ids between [CLS] and [SEP] of one output row (checking the framing and the padding)."""
    row = list(row)
    assert row[0] == tok.cls_id
    end = row.index(tok.sep_id)
    assert all(t == 0 for t in row[end + 1:])
    return row[1:end]


def _reduce(strategy, captions, k, counter=0, tok=None, **kw):
    tok = tok or _tok()
    r = text_reduction.TextReducer(strategy, k, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id,
                                   vocab=tok.vocab, **kw)
    ids = tok.tokenize(captions)
    out = r(ids, counter).numpy()
    assert out.shape == (len(captions), k)
    return [_content(ids.numpy()[i], tok) for i in range(len(captions))], [_content(o, tok) for o in out]


CAPTIONS = [" ".join(WORDS[:n]) for n in (0, 1, 3, 6, 7, 12, 25, 30)]


@pytest.mark.parametrize("strategy", ["truncate", "random", "block", "syntax"])
def test_each_strategy_keeps_exactly_k_tokens_in_order(strategy):
    k = 8
    for counter in range(5):
        full, red = _reduce(strategy, CAPTIONS, k, counter)
        for f, r in zip(full, red):
            assert len(r) == min(len(f), k - 2), (f, r)
            pos = [f.index(t) for t in r]  # the ids of a caption are distinct: positions are unambiguous
            assert pos == sorted(pos) and len(set(pos)) == len(pos)  # a subsequence, original order kept
            if len(f) <= k - 2:
                assert r == f  # short captions pass through whole
            elif strategy == "truncate":
                assert r == f[: k - 2]
            elif strategy == "block":
                assert pos == list(range(pos[0], pos[0] + k - 2))  # contiguous


@pytest.mark.parametrize("strategy", ["random", "block"])
def test_random_strategies_vary_with_the_batch_and_replay_exactly(strategy):
    cap = [" ".join(WORDS[:30])]
    seen, starts = set(), set()
    for counter in range(40):
        _, a = _reduce(strategy, cap, 8, counter)
        _, b = _reduce(strategy, cap, 8, counter)
        assert a == b  # stateless: the same batch counter, the same choice
        seen.update(a[0])
        starts.add(a[0][0])
    full = _reduce("truncate", cap, 32)[0][0]
    # over 40 batches every position gets picked (random) / many different blocks start (block)
    if strategy == "random":
        assert seen == set(full)
    else:
        assert len(starts) >= 10 and starts <= set(full[:25])  # 25 possible starts of 6 of 30


def test_syntax_ranks_nouns_then_adjectives_then_verbs_keeping_order():
    tok = _tok(words=tuple(SYNTAX_WORDS))
    wn = text_reduction.load_wordnet(text_reduction.DEFAULT_WORDNET_DIR)
    cls = {w: text_reduction.CLASS_NAMES[text_reduction.word_class(w, wn)] for w in
           ("dog", "field", "sky", "photo", "circle", "small", "green", "tall", "red", "runs", "drawn", "a", "the",
            "on", "across", "quickly", "is")}
    assert cls == {"dog": "noun", "field": "noun", "sky": "noun", "photo": "noun", "circle": "noun",
                   "small": "adjective", "green": "adjective", "tall": "adjective", "red": "adjective",
                   "runs": "verb", "drawn": "verb", "a": "other", "the": "other", "on": "other",
                   "across": "other", "quickly": "other", "is": "other"}

    def words(strategy, caption, k):
        _, red = _reduce(strategy, [caption], k, tok=tok)
        return " ".join(tok.vocab[i] for i in red[0])

    s = "a small dog runs across the green field"
    assert words("syntax", s, 4) == "dog field"  # nouns first
    assert words("syntax", s, 5) == "small dog field"  # + the first adjective, original order
    assert words("syntax", s, 6) == "small dog green field"  # + the second adjective
    assert words("syntax", s, 7) == "small dog runs green field"  # + the verb
    assert words("syntax", s, 8) == "a small dog runs green field"  # + the first "other" word
    assert words("truncate", s, 5) == "a small dog"
    # a word split into pieces ranks as one word: "skyscraper" = sky ##scraper, a noun, kept whole
    assert words("syntax", "a tall skyscraper is drawn quickly", 4) == "sky ##scraper"
    assert words("syntax", "a tall skyscraper is drawn quickly", 6) == "tall sky ##scraper drawn"
    assert words("syntax", "quickly drawn red circle on a photo", 5) == "red circle photo"


def test_syntax_without_the_lexicon_is_a_clear_error(tmp_path):
    tok = _tok()
    with pytest.raises(UsageError) as e:
        text_reduction.TextReducer("syntax", 8, cls_id=tok.cls_id, sep_id=tok.sep_id, vocab=tok.vocab,
                                   wordnet_dir=str(tmp_path))
    msg = str(e.value)
    assert "wordnet-base" in msg and "--config.text_reduction.wordnet_dir" in msg and str(tmp_path) in msg


@pytest.mark.parametrize("field,value,needle", [("strategy", "nouns", "truncate, random, block, syntax"),
                                                ("length", 40, "3..32"), ("length", 2, "3..32")])
def test_bad_text_reduction_config_is_a_usage_error(field, value, needle):
    c = config_lib.load_config("clipa_tiny")
    c.text_reduction.strategy = "truncate"
    c.text_reduction[field] = value
    with pytest.raises(UsageError, match="text_reduction") as e:
        text_reduction.reducer_from_config(c, _tok())
    assert needle in str(e.value)


def test_reduction_runs_inside_the_input_pipeline(tmp_path, flip_data, vocab_file):
    from laionprep._env import import_tf
    from laionprep.train_ref import input_pipeline

    tf = import_tf()
    tok = tokenizer_lib.Tokenizer(tokenizer_lib.load_vocab(vocab_file), 16)
    red = text_reduction.TextReducer("random", 6, cls_id=tok.cls_id, sep_id=tok.sep_id, vocab=tok.vocab)
    ds = input_pipeline.train_dataset(flip_data, tok, image_size=16, batch_size=8, shuffle_buffer=8,
                                      text_transform=red)
    it = iter(ds)
    next(it)
    tf.train.Checkpoint(iterator=it).write(str(tmp_path / "it"))  # the iterator (random choices included) saves
    want = [next(it)["text"].numpy() for _ in range(2)]
    it2 = iter(ds)
    tf.train.Checkpoint(iterator=it2).read(str(tmp_path / "it")).assert_existing_objects_matched()
    assert all(np.array_equal(w, next(it2)["text"].numpy()) for w in want)  # and replays exactly

    red = text_reduction.TextReducer("syntax", 6, cls_id=tok.cls_id, sep_id=tok.sep_id, vocab=tok.vocab)
    ds = input_pipeline.train_dataset(flip_data, tok, image_size=16, batch_size=8, shuffle_buffer=8,
                                      text_transform=red)
    b = next(iter(ds))
    text = b["text"].numpy()
    assert b["image"].shape == (8, 16, 16, 3) and text.shape == (8, 6)
    # the same pipeline without the reduction yields the same batch (same seed): its captions, reduced eagerly
    full = next(iter(input_pipeline.train_dataset(flip_data, tok, image_size=16, batch_size=8, shuffle_buffer=8)))
    full = full["text"].numpy()
    np.testing.assert_array_equal(text, red(full, 0).numpy())
    for row, whole in zip(text, full):
        content, words = _content(row, tok), _content(whole, tok)
        assert len(content) == min(len(words), 4)
        # every demo caption has >= 3 nouns/adjectives ("a photo of a red circle" -> photo red circle + one more)
        assert sum(tok.vocab[t] in ("a", "of", "on", "the") for t in content) <= 1, [tok.vocab[t] for t in content]


def test_zero_shot_prompts_are_reduced_like_the_training_text():
    tok = _tok(words=tuple(SYNTAX_WORDS))
    c = config_lib.load_config("clipa_tiny")
    assert text_reduction.eval_tokenizer(c, tok) is tok  # no reduction at the top level (the last stage's)
    c.text_reduction.update(strategy="syntax", length=5)
    out = text_reduction.eval_tokenizer(c, tok)(["a photo of the small red circle", "a dog"])
    assert [[tok.vocab[i] for i in _content(row, tok)] for row in out] == [["photo", "small", "circle"], ["a", "dog"]]
    c.text_reduction.strategy = "random"  # random choices have no place in a classifier: truncated instead
    out = text_reduction.eval_tokenizer(c, tok)(["a photo of the small red circle"])
    assert [tok.vocab[i] for i in _content(out[0], tok)] == ["a", "photo", "of"]


# ------------------------------------------------------------------------------------- position embeddings


def test_resize_is_interpolation_on_the_2d_grid():
    g, d = 4, 3
    y, x = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g, indexing="ij")
    table = np.stack([x, y, np.ones_like(x)], -1).reshape(g * g, d).astype(np.float32)  # linear in x and y
    assert np.array_equal(np.asarray(pos_embed.resize(table, g)), table)
    for method in ("bilinear", "bicubic"):
        out = np.asarray(pos_embed.resize(table, 8, method)).reshape(8, 8, d)
        c = (np.arange(8) + 0.5) / 8
        # where the kernel does not reach past the border, interpolating a linear field is exact: inside the
        # outermost old centres for bilinear (2 taps), the middle for bicubic (4 taps)
        inner = slice(1, 7) if method == "bilinear" else slice(3, 5)
        np.testing.assert_allclose(out[inner, inner, 0], np.broadcast_to(c[None, inner], out[inner, inner, 0].shape),
                                   atol=1e-5)
        np.testing.assert_allclose(out[inner, inner, 1], np.broadcast_to(c[inner, None], out[inner, inner, 1].shape),
                                   atol=1e-5)
        np.testing.assert_allclose(out[..., 2], 1.0, atol=1e-5)
    with pytest.raises(UsageError, match="pos_embed_resize"):
        pos_embed.resize(table, 8, "nearest")


def _abstract_params(cfg, vocab_size):
    model = models.build_model(cfg.model, vocab_size, cfg.tokenizer.max_len)
    s = cfg.model.image.image_size
    return model, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, s, s, 3)),
                                                    jnp.zeros((1, cfg.tokenizer.max_len), jnp.int32),
                                                    train=False))["params"]


def test_checkpoint_moves_to_another_resolution(tmp_path, flip_data, vocab_file, capsys):
    """A run at 16 px with learned position embeddings, continued at 32 px: the 2x2 table is interpolated to 4x4,
    everything else is loaded as it was, and the 32 px model trains; with sin-cos ones nothing needs resizing."""
    vocab_size = len(tokenizer_lib.load_vocab(vocab_file))
    low = str(tmp_path / "low")
    c16 = tiny_config(flip_data, vocab_file, num_train_steps=3, checkpoint_every_steps=3)
    c16.model.image.update(image_size=16, pos_embed="learn")
    train.train_and_evaluate(c16, low, quiet=True)
    _, abs16 = _abstract_params(c16, vocab_size)
    p16, _ = checkpointing.load_params(low, abs16)
    assert p16["image"]["pos_embed"].shape == (4, 64)

    c32 = tiny_config(flip_data, vocab_file, num_train_steps=2, pretrain_dir=low)
    c32.model.image.update(image_size=32, pos_embed="learn", pos_embed_resize="bicubic")
    model32, abs32 = _abstract_params(c32, vocab_size)
    p32, step = pos_embed.load_params(low, abs32, method="bicubic")
    assert step == 3 and p32["image"]["pos_embed"].shape == (16, 64)
    np.testing.assert_allclose(np.asarray(p32["image"]["pos_embed"]),
                               np.asarray(pos_embed.resize(p16["image"]["pos_embed"], 4, "bicubic")), atol=1e-6)
    assert not np.allclose(np.asarray(p32["image"]["pos_embed"])[0], np.asarray(p32["image"]["pos_embed"])[5])
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))),
                                  {k: v for k, v in p16.items() if k != "image"},
                                  {k: v for k, v in p32.items() if k != "image"})
    assert all(jax.tree_util.tree_leaves(same))
    z = model32.apply({"params": p32}, jnp.zeros((2, 32, 32, 3)), train=False, method=models.FLIP.encode_image)
    assert z.shape == (2, 32) and bool(jnp.all(jnp.isfinite(z)))
    capsys.readouterr()
    res = train.train_and_evaluate(c32, str(tmp_path / "high"))  # pretrain_dir at another resolution
    assert "image position embeddings 2x2 -> 4x4 (bicubic)" in capsys.readouterr().out
    assert res["step"] == 2 and np.isfinite(res["loss"])

    # sin-cos: no parameter depends on the grid; the 16 px parameters run at 32 px as they are
    c16s = tiny_config(flip_data, vocab_file)
    c16s.model.image.image_size = 16
    m16s, a16s = _abstract_params(c16s, vocab_size)
    c32s = tiny_config(flip_data, vocab_file)
    m32s, a32s = _abstract_params(c32s, vocab_size)
    assert "pos_embed" not in a16s["image"]
    assert jax.tree_util.tree_map(lambda a: a.shape, a16s) == jax.tree_util.tree_map(lambda a: a.shape, a32s)
    params = m16s.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16), jnp.int32),
                       train=False)["params"]
    z = m32s.apply({"params": params}, jnp.ones((2, 32, 32, 3)), train=False, method=models.FLIP.encode_image)
    assert z.shape == (2, 32) and bool(jnp.all(jnp.isfinite(z)))


# ----------------------------------------------------------------------------------------- staged runs


def staged_config(data: str, vocab: str):
    """Two stages: 6 steps at 16 px with 6 syntax-reduced text tokens, then 6 at 32 px with full text;
    learned position embeddings (interpolated at the boundary), checkpoints every 3 steps."""
    import ml_collections

    c = tiny_config(data, vocab, num_train_steps=6, checkpoint_every_steps=3)
    c.model.image.pos_embed = "learn"
    c.stage_order = ("low", "full")
    c.stages.low = ml_collections.ConfigDict({"model": {"image": {"image_size": 16}},
                                              "text_reduction": {"strategy": "syntax", "length": 6}})
    c.stages.full = ml_collections.ConfigDict({"model": {"image": {"image_size": 32}}, "learning_rate": 5e-4,
                                               "warmup_steps": 1})
    return c


def _steps(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if "train/loss" in line]


@pytest.fixture(scope="module")
def staged_a(tmp_path_factory, flip_data, vocab_file):
    w = str(tmp_path_factory.mktemp("staged_a"))
    seen = []
    res = runner.train_and_evaluate(staged_config(flip_data, vocab_file), w, quiet=True,
                                    step_hook=lambda s, m: seen.append((s, m["stage"], m["stage_step"])))
    return w, res, seen


def test_staged_run_crosses_its_boundary(staged_a):
    w, res, seen = staged_a
    assert res["stage"] == "full" and res["step"] == 6 and res["total_step"] == 12
    assert seen == [(i, "low", i) for i in range(1, 7)] + [(6 + i, "full", i) for i in range(1, 7)]
    low, full = os.path.join(w, "stage1_low"), os.path.join(w, "stage2_full")
    assert _steps(low) == list(range(1, 7)) and _steps(full) == list(range(1, 7))
    with open(os.path.join(low, "config.json")) as f:
        c1 = json.load(f)
    with open(os.path.join(full, "config.json")) as f:
        c2 = json.load(f)
    assert c1["model"]["image"]["image_size"] == 16 and c1["text_reduction"]["strategy"] == "syntax"
    assert c2["model"]["image"]["image_size"] == 32 and c2["text_reduction"]["strategy"] == "none"
    assert c2["pretrain_dir"] == low and c2["learning_rate"] == 5e-4
    assert checkpointing.latest_step(low) == 6 and checkpointing.latest_step(full) == 6
    # the stage-2 checkpoint has the 32 px model: a 4x4 learned table
    shapes = pos_embed._checkpoint_shapes(full, None)
    assert shapes[("image", "pos_embed")] == (16, 64)
    assert pos_embed._checkpoint_shapes(low, None)[("image", "pos_embed")] == (4, 64)


def test_eval_of_a_staged_run_reads_its_last_stage(staged_a, flip_data, vocab_file, eval_folder):
    """`laionprep eval` on a staged config evaluates the final stage's checkpoint (32 px, stage 2), in its folder."""
    w, _, _ = staged_a
    c = staged_config(flip_data, vocab_file)
    c.eval.source = eval_folder
    res = runner.evaluate(c, w)
    assert res["step"] == 6 and res["num_examples"] == 240 and 0.0 <= res["top1"] <= res["top5"] <= 1.0
    with open(os.path.join(w, "stage2_full", "eval_results.json")) as f:
        assert json.load(f)["top1"] == res["top1"]
    assert not os.path.exists(os.path.join(w, "stage1_low", "eval_results.json"))


def test_staged_run_killed_in_stage_2_resumes_there(tmp_path, staged_a, flip_data, vocab_file):
    a_dir, _, _ = staged_a
    b_dir = str(tmp_path / "b")
    code = f"""
        import os, signal
        from test_clipa import staged_config
        from laionprep.train_ref import runner

        def hook(step, metrics):
            if step == 11:  # stage 2, step 5: after its checkpoint at 3
                assert metrics["stage"] == "full" and metrics["stage_step"] == 5
                os.kill(os.getpid(), signal.SIGKILL)

        runner.train_and_evaluate(staged_config({flip_data!r}, {vocab_file!r}), {b_dir!r}, step_hook=hook, quiet=True)
    """
    r = _subprocess(code)
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])
    low, full = os.path.join(b_dir, "stage1_low"), os.path.join(b_dir, "stage2_full")
    assert checkpointing.latest_step(low) == 6 and checkpointing.latest_step(full) == 3
    seen = []
    res = runner.train_and_evaluate(staged_config(flip_data, vocab_file), b_dir, quiet=True,
                                    step_hook=lambda s, m: seen.append((s, m["stage"])))
    assert seen == [(10, "full"), (11, "full"), (12, "full")]  # continues in stage 2 after its step 3
    assert res["total_step"] == 12
    assert _steps(low) == list(range(1, 7))  # stage 1 was not run again
    assert _steps(full) == list(range(1, 6)) + [4, 5, 6]
    la, lb = _losses(os.path.join(a_dir, "stage2_full")), _losses(full)
    for s in range(1, 7):  # the same stage-2 loss curve as the uninterrupted run
        assert lb[s] == pytest.approx(la[s], rel=1e-5, abs=1e-6), (s, la[s], lb[s])


def test_staged_run_stopped_at_the_boundary_starts_stage_2(tmp_path, staged_a, flip_data, vocab_file):
    a_dir, _, _ = staged_a
    b_dir = str(tmp_path / "b")

    class Stop(Exception):
        pass

    def hook(step, metrics):
        if step == 6:  # the last step of stage 1, after its final checkpoint
            raise Stop()

    with pytest.raises(Stop):
        runner.train_and_evaluate(staged_config(flip_data, vocab_file), b_dir, step_hook=hook, quiet=True)
    assert checkpointing.latest_step(os.path.join(b_dir, "stage1_low")) == 6
    assert not os.path.isdir(os.path.join(b_dir, "stage2_full", "checkpoints"))
    seen = []
    res = runner.train_and_evaluate(staged_config(flip_data, vocab_file), b_dir, quiet=True,
                                    step_hook=lambda s, m: seen.append(s))
    assert seen == list(range(7, 13)) and res["total_step"] == 12
    la, lb = _losses(os.path.join(a_dir, "stage2_full")), _losses(os.path.join(b_dir, "stage2_full"))
    assert lb == pytest.approx(la, rel=1e-5, abs=1e-6)


def test_staged_config_reads_a_low_resolution_copy_then_the_full_resolution_source(tmp_path, flip_data, vocab_file,
                                                                                   eval_folder, capsys):
    """CLIPA's recipe with ``reshard --image-size``: stage 1 (16 px) reads a 24 px copy of the data
    (``stages.low.data.source``), stage 2 (32 px) and the zero-shot evaluation the full-resolution records.  The
    top-level source does not exist, so a stage that did not read its own source would fail."""
    import ml_collections

    from laionprep._env import import_tf

    tf = import_tf()
    copy = str(tmp_path / "copy24")
    files = write_low_res_copy(flip_data, copy, 24)
    first = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(files[0]))).numpy())
    assert min(tf.image.extract_jpeg_shape(first.features.feature["jpg"].bytes_list.value[0]).numpy()[:2]) == 24
    c = staged_config(str(tmp_path / "no_such_source"), vocab_file)
    c.stages.low.data = ml_collections.ConfigDict({"source": copy})
    c.stages.full.data = ml_collections.ConfigDict({"source": flip_data})
    c.eval.source = eval_folder
    w = str(tmp_path / "run")
    res = runner.train_and_evaluate(c, w)
    printed = capsys.readouterr().out
    assert res["stage"] == "full" and res["total_step"] == 12 and np.isfinite(res["loss"]) and "top1" in res
    assert printed.index(f"TFRecord files in {copy}") < printed.index(f"TFRecord files in {flip_data}")
    for d, src in (("stage1_low", copy), ("stage2_full", flip_data)):
        with open(os.path.join(w, d, "config.json")) as f:
            assert json.load(f)["data"]["source"] == src
        assert checkpointing.latest_step(os.path.join(w, d)) == 6


def test_bundled_clipa_configs():
    h = stages.stage_configs(config_lib.load_config("clipa_h14"))
    (n1, pre), (n2, ft) = h
    assert (n1, n2) == ("low_res", "full_res")
    assert pre.model.image.image_size == 84 and pre.model.image.patch_size == 14 and pre.model.image.width == 1280
    assert pre.text_reduction.strategy == "syntax" and pre.text_reduction.length == 8
    assert pre.num_train_samples == 10_000 * 1_281_167 and pre.model.image.mask_ratio == 0.0
    assert ft.model.image.image_size == 224 and ft.text_reduction.strategy == "none"
    assert ft.num_train_samples == 524_288_000 and ft.model.image.mask_ratio == 0.3
    (_, pre70), _ = stages.stage_configs(config_lib.load_config("clipa_h14:70_8"))
    assert pre70.model.image.image_size == 70
    for name, res in (("clipa_l16", 112), ("clipa_b16", 112), ("clipa_l16:160", 160), ("clipa_b16:64_16", 64)):
        (_, pre), (_, ft) = stages.stage_configs(config_lib.load_config(name))
        assert pre.model.image.image_size == res and ft.model.image.image_size == 224, name
    c = config_lib.load_config("clipa_tiny", ["--config.stages.low_res.model.image.image_size=24"])
    assert stages.stage_configs(c)[0][1].model.image.image_size == 24
    c = config_lib.load_config("clipa_tiny", ["--config.stage_order=('low_res', 'nope')"])
    with pytest.raises(UsageError, match="nope"):
        stages.stage_configs(c)


@pytest.mark.slow
def test_clipa_tiny_learns_the_demo_data(tmp_path, eval_folder, demo_pairs):
    """The `laionprep demo --variant clipa` training: clipa_tiny (16 px + 8 syntax tokens, then 32 px) on the demo
    data registered as TFDS reaches >= 3x chance zero-shot."""
    root, name = demo_pairs
    res = runner.train_demo(name, eval_folder, str(tmp_path / "run"), data_dir=root, config="clipa_tiny")
    chance = 1 / 30
    assert res["num_examples"] == 240 and res["stage"] == "full_res" and res["total_step"] == 250
    assert res["top1"] >= 3 * chance, res
    low = os.path.join(str(tmp_path / "run"), "stage1_low_res")
    losses = _losses(low)
    assert losses[200] < losses[25] - 0.5, losses
    with open(os.path.join(str(tmp_path / "run"), "eval_results.json")) as f:
        assert json.load(f)["top1"] == res["top1"]
    print(f"\nclipa_tiny zero-shot top-1 {100 * res['top1']:.1f}% top-5 {100 * res['top5']:.1f}%")


def test_clipa_resolution_not_a_multiple_of_the_patch_is_a_usage_error():
    with pytest.raises(UsageError, match="84 is not a multiple of the patch size 16"):
        config_lib.load_config("clipa_b16:84")


def test_reducing_to_more_tokens_than_the_captions_have_is_a_usage_error():
    tok = _tok(max_len=16)
    r = text_reduction.TextReducer("truncate", 20, cls_id=tok.cls_id, sep_id=tok.sep_id)
    with pytest.raises(UsageError, match="text_reduction.length=20 is longer than the tokenized captions"):
        r(tok.tokenize(["w1 w2"]))
