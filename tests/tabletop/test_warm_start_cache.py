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


def test_demonstrations_do_not_depend_on_how_many_envs_run_them():
    """The cache key leaves the env count out (a benchmark's 8 envs and pcm-run's 64 share one warm
    start), so the demonstrations must not depend on it: the same chunks, bit for bit, in the same
    order, with execution noise and gripper flips drawn, from 3 envs (the last batch padded) and 8."""
    import torch

    from pcm_core.warm_start import collect_demonstrations
    from pcm_tabletop.env import TabletopEnv, TabletopOptions

    def demos(num_envs):
        env = TabletopEnv(TabletopOptions(image_size=16), num_envs=num_envs, seed=0)
        return collect_demonstrations(env, 4, 8, seed=7, execution_noise=0.05, gripper_flip_prob=0.05)

    (obs_a, texts_a, actions_a), (obs_b, texts_b, actions_b) = demos(3), demos(8)
    assert len(actions_a) > 8  # several chunks of several successful episodes
    assert texts_a == texts_b and torch.equal(actions_a, actions_b)
    assert obs_a.keys() == obs_b.keys() and all(torch.equal(obs_a[k], obs_b[k]) for k in obs_a)
