"""The warm-start cache key: which settings give a separate SFT checkpoint."""

from pcm_core.config import load_config
from pcm_core.warm_start import cache_path, sft_seed


def test_sft_seed_defaults_to_the_training_seed():
    config = load_config(None, ["train.seed=3"])
    assert sft_seed(config) == 3
    assert cache_path(config) == cache_path(load_config(None, ["train.seed=5", "train.sft.seed=3"]))
    assert cache_path(config) != cache_path(load_config(None, ["train.seed=5"]))


def test_a_fixed_sft_seed_shares_one_warm_start_across_training_seeds():
    paths = {cache_path(load_config(None, [f"train.seed={seed}", "train.sft.seed=0"])) for seed in range(3)}
    assert len(paths) == 1
    assert sft_seed(load_config(None, ["train.seed=2", "train.sft.seed=0"])) == 0


def test_where_the_envs_run_does_not_change_the_warm_start():
    assert cache_path(load_config(None, [])) == cache_path(load_config(None, ["env.workers=2"]))


def test_options_written_out_at_their_defaults_keep_the_warm_start():
    default = cache_path(load_config(None, []))
    assert default == cache_path(load_config(None, ["env.options.max_steps=256", "policy.options.size=1m"]))
    assert default != cache_path(load_config(None, ["env.options.max_steps=128"]))
