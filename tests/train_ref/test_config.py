"""Config files + command-line overrides, and the bundled configs' published FLIP numbers."""
from __future__ import annotations

import pytest

from laionprep.errors import UsageError
from laionprep.train_ref import config_lib


def test_overrides_convert_to_the_field_type(tmp_path):
    c = config_lib.load_config("flip_tiny", [
        "--config.batch_size=256", "--config.model.image.mask_ratio", "0.75", "--config.data.flip=false",
        "--config.data.area_range=(0.3, 1.0)", "--config.pretrain_dir=/some/run", "--config.learning_rate=4e-8",
        "--config.partition_states=True"])
    assert c.batch_size == 256 and isinstance(c.batch_size, int)
    assert c.model.image.mask_ratio == 0.75
    assert c.data.flip is False
    assert tuple(c.data.area_range) == (0.3, 1.0)
    assert c.pretrain_dir == "/some/run"
    assert c.learning_rate == pytest.approx(4e-8)
    assert c.partition_states is True


def test_config_by_path_and_with_arg(tmp_path):
    path = config_lib.resolve_config_path("flip_b16")
    assert config_lib.load_config(path).model.image.width == 768
    f = tmp_path / "mine.py"
    f.write_text("import ml_collections\n"
                 "from laionprep.train_ref.configs.common import base_config\n"
                 "def get_config(arg='8'):\n"
                 "    c = base_config()\n"
                 "    c.model.image.patch_size = int(arg)\n"
                 "    return c\n")
    assert config_lib.load_config(str(f)).model.image.patch_size == 8
    assert config_lib.load_config(f"{f}:14").model.image.patch_size == 14


@pytest.mark.parametrize("args,needle", [
    (["--config.model.image.mask_rato=0.5"], "mask_ratio"),     # typo: the close match is suggested
    (["--config.batch_size=abc"], "int"),
    (["--config.batch_size=1.5"], "int"),
    (["--config.data.flip=maybe"], "bool"),
    (["--config.model=3"], "group"),
    (["--batch_size=3"], "unexpected"),
    (["--config.batch_size"], "no value"),
])
def test_bad_overrides_are_usage_errors(args, needle):
    with pytest.raises(UsageError) as e:
        config_lib.load_config("flip_tiny", args)
    assert needle in str(e.value)


def test_missing_config_is_a_usage_error():
    with pytest.raises(UsageError):
        config_lib.load_config("/nonexistent/flip.py")


def test_published_flip_sizes_and_recipe():
    import jax
    import jax.numpy as jnp

    from laionprep.train_ref import optim

    b, l_, h = (config_lib.load_config(n) for n in ("flip_b16", "flip_l16", "flip_h14"))
    img = b.model.image
    assert (img.width, img.depth, img.num_heads, img.patch_size) == (768, 12, 12, 16)
    assert (b.model.text.width, b.model.text.depth, b.model.text.num_heads, b.model.embed_dim) == (512, 12, 8, 512)
    img = l_.model.image
    assert (img.width, img.depth, img.num_heads, img.patch_size) == (1024, 24, 16, 16)
    assert (l_.model.text.width, l_.model.text.depth, l_.model.text.num_heads, l_.model.embed_dim) == (768, 12, 12, 768)
    img = h.model.image
    assert (img.width, img.depth, img.num_heads, img.patch_size) == (1280, 32, 16, 14)
    assert (h.model.text.width, h.model.text.depth, h.model.text.num_heads, h.model.embed_dim) == (1024, 24, 16, 1024)
    for c in (b, l_, h):
        assert c.batch_size == 65536 and c.learning_rate == 4e-6 and c.b2 == 0.95 and c.weight_decay == 0.2
        assert c.model.image.mask_ratio == 0.5 and c.tokenizer.max_len == 32
        assert c.model.image.mlp_dim == 4 * c.model.image.width and c.model.text.mlp_dim == 4 * c.model.text.width
        assert optim.peak_learning_rate(c) == pytest.approx(4e-6 * 256)
    assert optim.schedule_steps(l_) == (12_811_670_000 // 65536, 25_623_340 // 65536)
    assert optim.schedule_steps(h)[1] == 256_233_400 // 65536
    # schedules are in samples: a smaller batch keeps the same number of images, more steps
    l_.batch_size = 32768
    assert optim.schedule_steps(l_)[0] == 12_811_670_000 // 32768
    assert optim.peak_learning_rate(l_) == pytest.approx(4e-6 * 128)
    # a laptop-sized batch on a 12.8B-sample schedule: 6.4e9 steps do not fit the int32 step counter
    l_.batch_size = 2
    with pytest.raises(UsageError, match="int32 step counter") as e:
        optim.schedule_steps(l_)
    assert e.value.where == "--config.batch_size" and "num_train_steps" in e.value.fix
    l_.num_train_steps = 100
    assert optim.schedule_steps(l_)[0] == 100
    l_.num_train_steps, l_.batch_size = 0, 8  # 1.6e9 steps: fits, and the schedule evaluates at its far end
    _, sched = optim.make_optimizer(l_, *optim.schedule_steps(l_))
    assert 0.0 <= float(jax.jit(sched)(jnp.int32(2**31 - 2))) < 1e-9


def test_lr_schedule_warmup_then_cosine():
    from laionprep.train_ref import optim

    c = config_lib.load_config("flip_tiny", ["--config.num_train_steps=100", "--config.warmup_steps=10",
                                             "--config.batch_size=512", "--config.learning_rate=1e-3"])
    _, sched = optim.make_optimizer(c, *optim.schedule_steps(c))
    peak = 1e-3 * 512 / 256
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(peak / 2, rel=1e-5)
    assert float(sched(10)) == pytest.approx(peak, rel=1e-5)
    assert float(sched(55)) == pytest.approx(peak / 2, rel=1e-3)  # half-way down the cosine
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-9)


def test_bundled_image_towers_have_the_vit_parameter_counts():
    """ViT-B/16 86M, ViT-L/16 304M, ViT-H/14 632M parameters (shapes only: nothing is allocated)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from laionprep.train_ref import models

    for name, want in (("flip_b16", 86.0), ("flip_l16", 303.9), ("flip_h14", 631.7)):
        c = config_lib.load_config(name)
        m = models.build_model(c.model, 30522, 32)
        p = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)),
                                          jnp.zeros((1, 32), jnp.int32), train=False))["params"]
        n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(p["image"])) / 1e6
        assert n == pytest.approx(want, abs=0.1), (name, n)
