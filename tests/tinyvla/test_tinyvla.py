"""The tinyvla policy: checkpoint round trip, log-prob consistency, binning, sampling, SFT, presets, rollouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pcm_core.registry import Registry
from pcm_core.rollout import act_on_alive
from pcm_core.types import ActionSpec
from pcm_tinyvla.binning import bins_to_actions
from pcm_tinyvla.modeling import TinyVLAConfig, TinyVLAForActionPrediction
from pcm_tinyvla.policy import SIZE_PRESETS, TinyVLAOptions, TinyVLAPolicy

INSTRUCTIONS = ["pick up the red cube", "Put the blue block in the bowl.", "open the drawer", "pick up the red cube"]


def make_obs(batch: int = 4, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (batch, size, size, 3), generator=g, dtype=torch.uint8),
        "proprio": torch.randn(batch, 5, generator=g),
        "state": torch.randn(batch, 12, generator=g),
    }


@pytest.fixture(scope="module", params=["token", "action"])
def policy(request) -> TinyVLAPolicy:
    """One query per action token (L = 28 query positions) or one per action (K = 4)."""
    return TinyVLAPolicy(TinyVLAOptions(seed=0, queries=request.param))


def test_registry_lists_tinyvla() -> None:
    registration = Registry(load_entry_points=False).get("policy", "tinyvla")
    assert registration.cls is TinyVLAPolicy
    assert registration.cls.Options is TinyVLAOptions


def test_save_load_round_trip(policy: TinyVLAPolicy, tmp_path) -> None:
    obs = make_obs()
    policy.save(str(tmp_path))
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()
    _, info = TinyVLAForActionPrediction.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]

    loaded = TinyVLAPolicy(TinyVLAOptions(path=str(tmp_path)))
    assert loaded.action_spec == ActionSpec(4, 7) and loaded.model.config.queries == policy.options.queries
    queries = {"token": 28, "action": 4}[policy.options.queries]
    assert loaded.model.action_queries.shape == (queries, 128) and loaded.model.action_head.out_features == 28 * 256 // queries
    assert loaded.model.state_dict().keys() == policy.model.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(loaded.logits(obs, INSTRUCTIONS), policy.logits(obs, INSTRUCTIONS))
    ids, mask = policy.encode_instructions(INSTRUCTIONS)
    ids2, mask2 = loaded.encode_instructions(INSTRUCTIONS)
    assert torch.equal(ids, ids2) and torch.equal(mask, mask2)


def test_loaded_checkpoint_rejects_conflicting_architecture(policy: TinyVLAPolicy, tmp_path) -> None:
    policy.save(str(tmp_path))
    with pytest.raises(ValueError, match="chunk_size"):
        TinyVLAPolicy(TinyVLAOptions(path=str(tmp_path), chunk_size=8))


@pytest.mark.parametrize("instruction_first", [False, True])
def test_padding_left_out_of_the_sequence_leaves_the_logits_as_they_are(instruction_first: bool) -> None:
    """The forward drops the instruction padding every row of a batch has, keeping the positions
    of the other tokens: a row alone (no padding left) scores as it does beside a longer instruction."""
    policy = TinyVLAPolicy(TinyVLAOptions(seed=0, instruction_first=instruction_first))
    obs = make_obs()
    _, mask = policy.encode_instructions(INSTRUCTIONS)
    assert len(set(mask.sum(1).tolist())) > 1  # rows of different lengths
    with torch.no_grad():
        together = policy.logits(obs, INSTRUCTIONS)
        for row, text in enumerate(INSTRUCTIONS):
            alone = policy.logits({key: value[row : row + 1] for key, value in obs.items()}, [text])
            torch.testing.assert_close(alone[0], together[row], atol=1e-5, rtol=0)
        moved = policy.model.sequence_positions(  # what a shifted query would see: the positions change
            [(None, mask[:, :3], torch.arange(3)), (None, torch.ones(1, 2), None)], 12, torch.device("cpu")
        )
    assert moved.tolist() == [0, 1, 2, 12, 13]


def test_patch_embedding_is_the_strided_convolution(policy: TinyVLAPolicy) -> None:
    """embed_image computes the patch conv (kernel = stride = patch) as one matmul over flattened patches."""
    images = make_obs()["image"]
    model = policy.model
    with torch.no_grad():
        pixels = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        expected = model.patch_embed(pixels).flatten(2).transpose(1, 2) + model.patch_position  # [B, N_p, h]
        torch.testing.assert_close(model.embed_image(images), expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module", params=["token", "action"])
def first_policy(request) -> TinyVLAPolicy:
    """The instruction-first layout, whose rollouts reuse the instruction's keys and values."""
    return TinyVLAPolicy(TinyVLAOptions(seed=0, queries=request.param, instruction_first=True))


def test_instruction_prefix_cache_gives_the_full_forward_logits(first_policy: TinyVLAPolicy) -> None:
    """Rows share instructions (the cache holds 3 entries for 4 rows) and match the full pass."""
    obs = make_obs()
    with torch.no_grad():
        full = first_policy.logits(obs, INSTRUCTIONS)
        cached = first_policy.logits(obs, INSTRUCTIONS, reuse_prefix=True)
        again = first_policy.logits(obs, INSTRUCTIONS, reuse_prefix=True)  # served from the cache
    assert len(first_policy._prefix_cache.entries) == 3
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
    assert torch.equal(again, cached)
    out = first_policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(1))
    rescored = first_policy.log_probs(obs, INSTRUCTIONS, out.tokens).detach()  # the full pass, as in training
    torch.testing.assert_close(rescored, out.logprobs, atol=1e-5, rtol=0)


def test_instruction_prefix_cache_follows_weight_updates(first_policy: TinyVLAPolicy) -> None:
    obs = make_obs()
    with torch.no_grad():
        before = first_policy.logits(obs, INSTRUCTIONS, reuse_prefix=True)
        embedding = first_policy.model.llm.embed_tokens.weight
        saved = embedding.clone()
        embedding.mul_(1.5)  # what an optimizer step does: an in-place update of the trunk
        after = first_policy.logits(obs, INSTRUCTIONS, reuse_prefix=True)
        full = first_policy.logits(obs, INSTRUCTIONS)
        embedding.copy_(saved)
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(after, full, atol=1e-5, rtol=0)


def test_the_layout_is_saved_with_the_model(first_policy: TinyVLAPolicy, tmp_path) -> None:
    image_first = TinyVLAPolicy(TinyVLAOptions(seed=0, queries=first_policy.options.queries))
    assert image_first._prefix_cache is None
    obs = make_obs()
    with torch.no_grad():  # same weights, other token order: other logits; no cache to reuse
        assert not torch.allclose(image_first.logits(obs, INSTRUCTIONS), first_policy.logits(obs, INSTRUCTIONS))
        plain = image_first.logits(obs, INSTRUCTIONS)
        assert torch.equal(image_first.logits(obs, INSTRUCTIONS, reuse_prefix=True), plain)
    first_policy.save(str(tmp_path))
    loaded = TinyVLAPolicy(TinyVLAOptions(path=str(tmp_path)))
    assert loaded.model.config.instruction_first is True and loaded._prefix_cache is not None
    with pytest.raises(ValueError, match="instruction_first"):
        TinyVLAPolicy(TinyVLAOptions(path=str(tmp_path), instruction_first=False))


def test_act_logprobs_match_log_probs(policy: TinyVLAPolicy) -> None:
    obs = make_obs()
    out = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(1))
    assert out.actions.shape == (4, 4, 7) and out.tokens.shape == (4, 28) and out.logprobs.shape == (4, 28)
    assert out.tokens.min() >= 0 and out.tokens.max() <= 255
    assert torch.equal(out.actions, bins_to_actions(out.tokens).reshape(4, 4, 7))
    assert ((out.entropy > 0) & (out.entropy <= math.log(256) + 1e-5)).all()

    rescored = policy.log_probs(obs, INSTRUCTIONS, out.tokens)
    assert rescored.requires_grad
    torch.testing.assert_close(rescored.detach(), out.logprobs, atol=1e-5, rtol=0)
    # a micro-batch of other composition scores its rows the same way
    sub = policy.log_probs({k: v[2:] for k, v in obs.items()}, INSTRUCTIONS[2:], out.tokens[2:])
    torch.testing.assert_close(sub.detach(), out.logprobs[2:], atol=1e-5, rtol=0)


def test_chunk_logprob_is_sum_of_independent_token_logprobs(policy: TinyVLAPolicy) -> None:
    obs = make_obs()
    tokens = torch.randint(0, 256, (4, 28), generator=torch.Generator().manual_seed(2))
    token_logprobs = policy.log_probs(obs, INSTRUCTIONS, tokens).detach()
    # parallel decoding: token l's distribution ignores every other token, so the chunk factorises
    changed = torch.randint(0, 256, (4, 28), generator=torch.Generator().manual_seed(3))
    changed[:, 5] = tokens[:, 5]
    torch.testing.assert_close(policy.log_probs(obs, INSTRUCTIONS, changed).detach()[:, 5], token_logprobs[:, 5])
    # each token's 256 probabilities sum to 1, so the chunk log-prob is the sum over L = K * D tokens
    with torch.no_grad():
        log_p = torch.log_softmax(policy.logits(obs, INSTRUCTIONS), dim=-1)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(4, 28))
    chunk = log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)  # [B]
    torch.testing.assert_close(token_logprobs.sum(-1), chunk, atol=1e-4, rtol=0)


def test_action_token_round_trip(policy: TinyVLAPolicy) -> None:
    # bin width 2/256: -1 -> 0, +1 -> 255 (clipped into the last bin), 0.0 -> 128 (left edge of
    # bin 128), 0.5 -> floor(1.5 * 128) = 192, -0.5 -> 64, out-of-range values are clipped.
    actions = torch.tensor([[-1.0, 1.0, 0.0, 0.5, -0.5, 1.7, -3.0]]).reshape(1, 1, 7)
    one_chunk = TinyVLAPolicy(TinyVLAOptions(chunk_size=1))
    assert one_chunk.actions_to_tokens(actions).tolist() == [[0, 255, 128, 192, 64, 255, 0]]
    # decoding gives bin centres: -1 + (b + 0.5) / 128
    assert bins_to_actions(torch.tensor([0, 128, 192, 255])).tolist() == [-0.99609375, 0.00390625, 0.50390625, 0.99609375]
    # centres survive the round trip; the order is (action k, dimension d) -> token k * D + d
    centres = bins_to_actions(torch.arange(224)).reshape(8, 4, 7)
    tokens = policy.actions_to_tokens(centres)
    assert torch.equal(tokens, torch.arange(224).reshape(8, 28))
    assert tokens[1, 2 * 7 + 3] == 28 + 17


def test_seeded_sampling_is_reproducible(policy: TinyVLAPolicy) -> None:
    obs = make_obs()
    first = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(7))
    second = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(7))
    other = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.tokens, second.tokens) and torch.equal(first.logprobs, second.logprobs)
    assert not torch.equal(first.tokens, other.tokens)


def test_greedy_is_deterministic_argmax(policy: TinyVLAPolicy) -> None:
    obs = make_obs()
    a = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(1), greedy=True)
    b = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(2), greedy=True)
    assert torch.equal(a.tokens, b.tokens)
    with torch.no_grad():
        assert torch.equal(a.tokens, policy.logits(obs, INSTRUCTIONS).argmax(-1))


def test_sft_steps_reduce_loss() -> None:
    policy = TinyVLAPolicy(TinyVLAOptions(seed=1))
    obs = make_obs(seed=4)
    target = torch.rand(4, 4, 7, generator=torch.Generator().manual_seed(5)) * 2 - 1
    tokens = policy.actions_to_tokens(target)
    optimizer = torch.optim.AdamW(policy.module.parameters(), lr=3e-3)
    policy.module.train()
    losses = []
    for _ in range(8):
        loss = -policy.log_probs(obs, INSTRUCTIONS, tokens).mean()  # cross-entropy on the target bins
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(256), abs=0.1)  # random init: near-uniform over 256 bins
    assert losses[-1] < losses[0] - 1.5


def test_observation_variants(policy: TinyVLAPolicy) -> None:
    obs = make_obs(size=32)  # resized to 64x64 inside
    del obs["state"]  # absent state keys are skipped
    assert policy.act(obs, INSTRUCTIONS).tokens.shape == (4, 28)
    too_wide = make_obs()
    too_wide["state"] = torch.zeros(4, 40)
    with pytest.raises(ValueError, match="max_state_dim"):
        policy.act(too_wide, INSTRUCTIONS)


def test_action_spec_sets_fresh_model() -> None:
    policy = TinyVLAPolicy(TinyVLAOptions(), action_spec=ActionSpec(chunk_size=2, action_dim=3))
    assert policy.action_spec == ActionSpec(2, 3) and policy.tokens_per_chunk == 6


@pytest.mark.parametrize(("size", "low", "high"), [("1m", 1.4e6, 1.6e6), ("25m", 26e6, 29e6), ("100m", 98e6, 108e6), ("1b", 1.05e9, 1.2e9)])
def test_size_presets(size: str, low: float, high: float) -> None:
    options = TinyVLAOptions(size=size)
    assert options.hidden_size == SIZE_PRESETS[size]["hidden_size"]
    config = TinyVLAPolicy.build_config(options)
    with torch.device("meta"):  # count parameters without allocating them
        count = sum(p.numel() for p in TinyVLAForActionPrediction(config).parameters())
    assert low <= count <= high


def test_explicit_option_overrides_preset() -> None:
    options = TinyVLAOptions(size="25m", num_layers=2)
    assert (options.hidden_size, options.num_layers) == (512, 2)
    assert TinyVLAOptions().hidden_size == TinyVLAConfig().hidden_size


@pytest.mark.parametrize("alive", [[True, False, True, False], [False, True, True, False]])
def test_rollouts_act_only_on_running_envs(policy: TinyVLAPolicy, alive: list[bool]) -> None:
    """The running envs' rows are what the greedy policy gives them inside the full batch (each in
    its own row); the finished envs' rows are zeros."""
    obs = make_obs()
    out = act_on_alive(policy, obs, INSTRUCTIONS, np.array(alive), torch.Generator().manual_seed(0), greedy=True)
    full = policy.act(obs, INSTRUCTIONS, greedy=True)  # every env, no subsetting
    rows, finished = [i for i, a in enumerate(alive) if a], [i for i, a in enumerate(alive) if not a]
    assert torch.equal(out.tokens[rows], full.tokens[rows])
    torch.testing.assert_close(out.logprobs[rows], full.logprobs[rows], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.actions[rows], full.actions[rows], rtol=0, atol=1e-5)
    assert bool((out.logprobs[rows] < 0).all())  # real log-probabilities, not zero rows
    for value in (out.actions, out.tokens, out.logprobs, out.entropy):
        assert value.shape[0] == 4 and not value[finished].any()  # finished envs: zero rows
