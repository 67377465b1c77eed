"""OpenVLA / OpenVLA-OFT backends on tiny random checkpoints in the published layout."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from published_keys import L1_HEAD, PROPRIO_PROJECTOR, published_keys
from tiny_checkpoint import INSTRUCTIONS, NORM_STATS

from pcm_core.errors import ConfigError
from pcm_openvla.action_tokens import ActionTokenizer, unnormalize
from pcm_openvla.build import tiny_config
from pcm_openvla.checkpoint import CheckpointFolderError
from pcm_openvla.configuration import PrismaticConfig, published_config
from pcm_openvla.modeling import L1RegressionActionHead, PrismaticVLA
from pcm_openvla.policy import OpenVLAOFTPolicy, OpenVLAPolicy

pytestmark = pytest.mark.openvla
pytest.importorskip("peft")  # the [openvla] extra

PCM_RUN = str(Path(sys.executable).with_name("pcm-run"))


def oft(path: str, **options) -> OpenVLAOFTPolicy:
    return OpenVLAOFTPolicy(OpenVLAOFTPolicy.Options(
        **{"path": path, "chunk_size": 2, "unnorm_key": "tabletop", "image_keys": ["image"], **options}
    ))


# --- names and layout -----------------------------------------------------------------------------


def test_state_dict_names_follow_the_published_ones():
    model = PrismaticVLA(PrismaticConfig(tiny_config()))
    assert set(model.state_dict()) == published_keys(dino_blocks=2, siglip_blocks=2, llama_layers=2)


def test_published_7b_config_gives_the_published_shapes():
    with torch.device("meta"):
        model = PrismaticVLA(PrismaticConfig(published_config()))
    state = model.state_dict()
    assert set(state) == published_keys(dino_blocks=24, siglip_blocks=27, llama_layers=32)
    assert state["vision_backbone.featurizer.pos_embed"].shape == (1, 256, 1024)
    assert state["vision_backbone.featurizer.reg_token"].shape == (1, 4, 1024)
    assert state["vision_backbone.fused_featurizer.pos_embed"].shape == (1, 256, 1152)
    assert state["vision_backbone.fused_featurizer.blocks.0.mlp.fc1.weight"].shape == (4304, 1152)
    assert state["projector.fc1.weight"].shape == (4 * 2176, 2176)
    assert state["projector.fc3.weight"].shape == (4096, 4096)
    assert state["language_model.lm_head.weight"].shape == (32064, 4096)
    total = sum(t.numel() for t in state.values())
    assert 7.5e9 < total < 7.6e9  # OpenVLA is "7.5B parameters"


def test_saved_folder_has_the_published_files(tiny_folder):
    folder = Path(tiny_folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((folder / s).is_file() for s in shards)
    assert set(index["weight_map"]) == published_keys(2, 2, 2)
    config = json.loads((folder / "config.json").read_text())
    for field in ("vision_backbone_id", "llm_backbone_id", "arch_specifier", "use_fused_vision_backbone",
                  "image_resize_strategy", "text_config", "n_action_bins", "norm_stats", "timm_model_ids",
                  "timm_override_act_layers", "image_sizes", "pad_to_multiple_of", "pad_token_id"):
        assert field in config, field
    assert config["model_type"] == "openvla" and config["n_action_bins"] == 256
    assert json.loads((folder / "dataset_statistics.json").read_text()) == NORM_STATS
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    projector = torch.load(folder / "proprio_projector--0_checkpoint.pt", weights_only=True)
    assert set(projector) == PROPRIO_PROJECTOR


def test_l1_head_names_follow_openvla_oft():
    assert set(L1RegressionActionHead(32, 7).state_dict()) == L1_HEAD


# --- round trips -----------------------------------------------------------------------------------


def test_load_save_load_gives_identical_logits(tiny_folder, obs, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_folder, source)
    (source / "preprocessor_config.json").write_text('{"image_resize_strategy": "resize-naive"}')
    first = oft(str(source))
    logits, _ = first.parallel_pass(obs, INSTRUCTIONS)
    first.save(str(tmp_path / "again"))
    assert (tmp_path / "again" / "preprocessor_config.json").read_text() == '{"image_resize_strategy": "resize-naive"}'
    second = oft(str(tmp_path / "again"))
    again, _ = second.parallel_pass(obs, INSTRUCTIONS)
    assert torch.equal(logits, again)
    for (name, a), (_, b) in zip(first.module.state_dict().items(), second.module.state_dict().items()):
        assert torch.equal(a, b), name


def test_action_tokens_round_trip_on_hand_made_numbers():
    tokens = ActionTokenizer(vocab_end=32000)  # Llama-2: action ids 31744..31999
    actions = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0, -3.0])
    ids = tokens.to_ids(actions)
    # np.digitize over linspace(-1, 1, 256): -1 -> 1, 0 -> 128, 1 -> 256 (clipped values likewise)
    assert ids.tolist() == [31999, 31936, 31872, 31808, 31744, 31744, 31999]
    step = 2 / 255  # edge spacing; centres sit half a step above each edge
    decoded = tokens.to_actions(ids)
    expected = [-1 + step / 2, -1 + 63 * step + step / 2, 0.0, -1 + 191 * step + step / 2, 1 - step / 2,
                1 - step / 2, -1 + step / 2]
    assert decoded.tolist() == pytest.approx(expected, abs=1e-6)
    assert (decoded - actions.clamp(-1, 1)).abs().max() <= step / 2 + 1e-6
    # ids 31744 (a = 1 exactly) and 31745 decode to the same last centre, which encodes as 31745
    assert tokens.to_ids(decoded).tolist() == [31999, 31936, 31872, 31808, 31745, 31745, 31999]
    assert torch.equal(tokens.to_actions(tokens.to_ids(decoded)), decoded)


def test_unnormalisation_on_hand_made_numbers():
    stats = NORM_STATS["tabletop"]["action"]  # q01 -0.5, q99 1.5 on xyz; gripper unmasked
    actions = torch.tensor([[-1.0, 0.0, 1.0, 0.5, -0.5, 0.0, -1.0]])
    assert unnormalize(actions, stats).tolist() == [[-0.5, 0.5, 1.5, 0.5, -0.5, 0.0, -1.0]]


def test_libero_gripper_command_on_hand_made_numbers():
    from pcm_openvla.policy import libero_gripper

    # OpenVLA: 1 open, 0 closed -> LIBERO: -1 open, +1 close (binarised)
    assert libero_gripper(torch.tensor([0.9, 0.6, 0.4, 0.0])).tolist() == [-1.0, -1.0, 1.0, 1.0]


def test_libero_gripper_label_inverts_the_command():
    from pcm_openvla.policy import libero_gripper, libero_gripper_label

    # LIBERO demos: -1 open, +1 close -> OpenVLA's labels 1 open, 0 closed (1 - clip(g, 0, 1))
    labels = libero_gripper_label(torch.tensor([-1.0, 1.0]))
    assert labels.tolist() == [1.0, 0.0]
    assert libero_gripper(labels).tolist() == [-1.0, 1.0]


def test_act_returns_dataset_units_and_libero_gripper(tiny_folder, obs):
    policy = oft(tiny_folder, unnormalize_actions=True, gripper="libero")
    normalised = oft(tiny_folder)
    out = policy.act(obs, INSTRUCTIONS, greedy=True)
    reference = normalised.act(obs, INSTRUCTIONS, greedy=True)
    assert torch.equal(out.tokens, reference.tokens)
    expected = 0.5 * (reference.actions[..., :3] + 1) * 2.0 - 0.5  # q01 -0.5, q99 1.5
    torch.testing.assert_close(out.actions[..., :3], expected)
    assert set(out.actions[..., 6].unique().tolist()) <= {-1.0, 1.0}
    # what the rollout stores for the phase proxies: the [-1, 1] values, the env's gripper command
    torch.testing.assert_close(out.normalized_actions[..., :6], reference.actions[..., :6])
    assert torch.equal(out.normalized_actions[..., 6], out.actions[..., 6])
    assert reference.normalized_actions is None  # already on the [-1, 1] scale


def test_sft_labels_in_env_units_decode_to_the_same_commands(tiny_folder, obs):
    """actions_to_tokens inverts act's decoding: LIBERO-unit labels (-1 open, +1 close) come back
    from the tokens as the same commands, so behaviour cloning teaches the gripper the right way."""
    policy = oft(tiny_folder, unnormalize_actions=True, gripper="libero")
    commands = torch.tensor([[[0.3, -0.2, 1.1, 0.5, -0.5, 0.0, -1.0], [1.0, 0.0, -0.4, 0.2, 0.1, -0.3, 1.0]]])
    tokens = policy.actions_to_tokens(commands)  # [1, 14]
    gripper_ids = tokens.view(1, 2, 7)[0, :, 6]
    end = policy.tokens.vocab_end  # ids are vocab_end - digitize bin: label 1 (open) -> bin 256, 0 (closed) -> 128
    assert gripper_ids.tolist() == [end - 256, end - 128]
    slots = policy.tokens.slot(tokens)
    log_p = torch.zeros(1, 14, policy.tokens.n_bins)
    decoded = policy._output(log_p, slots, 1).actions  # [1, 2, 7] env units
    step = 2.0 / 255 * 2.0 / 2  # a bin's width in dataset units (q99 - q01 = 2)
    torch.testing.assert_close(decoded[..., :6], commands[..., :6], atol=step, rtol=0)
    assert decoded[..., 6].tolist() == [[-1.0, 1.0]]


def test_centre_crop_and_normalisation_on_hand_made_pixels():
    from pcm_openvla.processing import pixel_values
    from pcm_openvla.vit import ViTSpec

    image = torch.arange(100, dtype=torch.uint8).reshape(1, 10, 10, 1).expand(1, 10, 10, 3)
    spec = ViTSpec(3, 8, 1, 1, 8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    (cropped,) = pixel_values(image, [spec], [6], crop_area=0.36)  # 6x6 centre: rows and columns 2..7
    assert torch.equal(cropped[0, 0] * 255, image[0, 2:8, 2:8, 0].float())
    half = ViTSpec(3, 8, 1, 1, 8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    (full,) = pixel_values(torch.full((1, 4, 4, 3), 255, dtype=torch.uint8), [half], [4])
    assert torch.equal(full, torch.ones(1, 3, 4, 4))  # (1 - 0.5) / 0.5


def test_preprocessor_config_sets_the_pixel_statistics(tiny_folder, tmp_path):
    folder = tmp_path / "with-processor"
    shutil.copytree(tiny_folder, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"means": [[0.25, 0.5, 0.75], [0.5, 0.5, 0.5]], "stds": [[0.125, 0.25, 0.5], [0.5, 0.5, 0.5]]}))
    specs = oft(str(folder)).config.vision_specs
    assert (specs[0].mean, specs[0].std) == ((0.25, 0.5, 0.75), (0.125, 0.25, 0.5))


def test_wrong_unnorm_key_is_one_clear_error(tiny_folder):
    with pytest.raises(CheckpointFolderError) as info:
        oft(tiny_folder, unnorm_key="libero_spatial")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "unnorm_key 'libero_spatial'" in lines[0] and "other, tabletop" in lines[0]
    assert lines[1] == "Fix: set policy.options.unnorm_key to one of them"


def test_a_camera_the_env_does_not_give_is_an_error_not_a_missing_image(obs):
    policy = OpenVLAOFTPolicy(OpenVLAOFTPolicy.Options(chunk_size=2))  # reads image and wrist_image by default
    with pytest.raises(ConfigError) as raised:
        policy.act(obs, INSTRUCTIONS)
    lines = str(raised.value).splitlines()
    assert len(lines) == 2 and "no 'wrist_image'" in lines[0] and "it gives image, proprio" in lines[0]
    assert lines[1].startswith("Fix: ") and "env.options.wrist_image=true" in lines[1]


def test_a_saved_checkpoint_gets_the_number_of_images_it_was_trained_on(tiny_folder):
    assert json.loads((Path(tiny_folder) / "config.json").read_text())["num_images_in_input"] == 1
    with pytest.raises(CheckpointFolderError) as raised:
        oft(tiny_folder, image_keys=["image", "wrist_image"])
    lines = str(raised.value).splitlines()
    assert len(lines) == 2 and "trained on 1 image(s)" in lines[0] and "gives 2" in lines[0]
    assert lines[1] == "Fix: set policy.options.image_keys to 1 camera(s), e.g. [image]"


def test_the_proprio_input_follows_the_checkpoint_projector(tiny_folder, tmp_path, obs):
    """No proprio token from a random projector, no trained projector left unused; without one, proprio_key null loads."""
    bare = tmp_path / "no-projector"
    shutil.copytree(tiny_folder, bare)
    (bare / "proprio_projector--0_checkpoint.pt").unlink()
    with pytest.raises(CheckpointFolderError, match="has no proprio_projector.*randomly initialised") as raised:
        oft(str(bare))
    assert str(raised.value).splitlines()[1].startswith("Fix: set policy.options.proprio_key=null")
    assert oft(str(bare), proprio_key=None).model.proprio_projector is None
    with pytest.raises(CheckpointFolderError, match="trained with proprio.*proprio_key is null"):
        oft(tiny_folder, proprio_key=None)


def test_unnormalized_actions_need_a_dataset(tiny_folder):
    with pytest.raises(CheckpointFolderError, match="no unnorm_key was given"):
        OpenVLAOFTPolicy(OpenVLAOFTPolicy.Options(path=tiny_folder, unnormalize_actions=True, image_keys=["image"]))


def test_l1_head_checkpoint_acts_for_evaluation_and_refuses_rl(tiny_folder, obs, tmp_path):
    folder = tmp_path / "with-head"
    shutil.copytree(tiny_folder, folder)
    torch.manual_seed(0)
    head = L1RegressionActionHead(32, 7)
    torch.save({f"module.{k}": v for k, v in head.state_dict().items()}, folder / "action_head--5_checkpoint.pt")
    policy = oft(str(folder), action_head="l1")
    out = policy.act(obs, INSTRUCTIONS)
    _, hidden = policy.parallel_pass(obs, INSTRUCTIONS)
    with torch.no_grad():
        torch.testing.assert_close(out.actions, head(hidden, 2).clamp(-1, 1))
    with pytest.raises(CheckpointFolderError, match="has no log-probabilities"):
        policy.log_probs(obs, INSTRUCTIONS, out.tokens)
    policy.save(str(tmp_path / "saved"))
    assert set(torch.load(tmp_path / "saved" / "action_head--5_checkpoint.pt", weights_only=True)) == L1_HEAD
    with pytest.raises(CheckpointFolderError, match="needs an action_head--<step>_checkpoint.pt"):
        oft(tiny_folder, action_head="l1")


# --- log-probabilities -----------------------------------------------------------------------------


def _direct_oft_log_probs(policy: OpenVLAOFTPolicy, obs, index: int, tokens: torch.Tensor) -> torch.Tensor:
    """One unpadded sequence built by hand and read by the bare Llama: [<s>, patches, proprio,
    prompt, 0 x L, </s>], all positions attending to all."""
    vla, length = policy.vla, policy.tokens_per_chunk
    single = {k: v[index : index + 1] for k, v in obs.items()}
    pixels = policy.pixels(single["image"])
    patches = vla.projector(vla.vision_backbone(pixels))
    proprio = torch.nn.functional.pad(single["proprio"], (0, 3))  # stats q01 -1, q99 1: unchanged
    proprio_token = policy.model.proprio_projector(proprio)[:, None]
    ids = torch.tensor([policy.prompt_ids(INSTRUCTIONS[index])])
    text = vla.embed_ids(ids)
    stop = vla.embed_ids(torch.tensor([[2]]))
    sequence = torch.cat([text[:, :1], patches, proprio_token, text[:, 1:], torch.zeros(1, length, text.shape[2]), stop], 1)
    full = torch.ones(1, 1, sequence.shape[1], sequence.shape[1], dtype=torch.bool)
    logits = vla.language_model(inputs_embeds=sequence, attention_mask=full).logits[0]
    first = sequence.shape[1] - length - 2  # the last prompt token
    action = logits[first : first + length, 64:320]  # the last 256 ids of the 320-id vocabulary
    return torch.log_softmax(action, -1).gather(-1, (tokens - 64)[:, None]).squeeze(-1)


def test_oft_token_log_probs_match_a_direct_computation(tiny_folder, obs):
    policy = oft(tiny_folder)
    out = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(1))
    scored = policy.log_probs(obs, INSTRUCTIONS, out.tokens)
    assert scored.shape == (3, 14)
    torch.testing.assert_close(scored, out.logprobs, rtol=0, atol=1e-5)
    for i in range(3):  # prompts of different lengths are padded in the batch, not here
        torch.testing.assert_close(scored[i], _direct_oft_log_probs(policy, obs, i, out.tokens[i]), rtol=0, atol=1e-4)


def test_openvla_token_log_probs_match_a_direct_computation(tiny_folder, obs):
    policy = OpenVLAPolicy(OpenVLAPolicy.Options(path=tiny_folder))
    out = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(2))
    assert out.actions.shape == (3, 1, 7) and out.tokens.shape == (3, 7)
    assert bool(((out.tokens >= 64) & (out.tokens < 320)).all())
    scored = policy.log_probs(obs, INSTRUCTIONS, out.tokens)
    torch.testing.assert_close(scored, out.logprobs, rtol=0, atol=1e-5)
    vla = policy.vla
    for i in range(3):  # causal teacher forcing on one unpadded sequence
        pixels = policy.pixels(obs["image"][i : i + 1])
        ids = torch.tensor([policy.prompt_ids(INSTRUCTIONS[i]) + out.tokens[i].tolist()])
        text = vla.embed_ids(ids)
        sequence = torch.cat([text[:, :1], vla.projector(vla.vision_backbone(pixels)), text[:, 1:]], 1)
        logits = vla.language_model(inputs_embeds=sequence).logits[0, -8:-1, 64:320]
        direct = torch.log_softmax(logits, -1).gather(-1, (out.tokens[i] - 64)[:, None]).squeeze(-1)
        torch.testing.assert_close(scored[i], direct, rtol=0, atol=1e-4)


def test_oft_chunk_log_prob_is_the_sum_of_its_token_log_probs(tiny_folder, obs):
    policy = OpenVLAOFTPolicy(OpenVLAOFTPolicy.Options(path=tiny_folder, chunk_size=8, image_keys=["image"]))
    assert policy.tokens_per_chunk == 8 * 7
    out = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(3))
    assert out.actions.shape == (3, 8, 7) and out.logprobs.shape == (3, 56)
    # the K x 7 tokens come from one pass and are independent given the observation: the chunk's
    # probability factorises, so changing one token changes only that token's log-prob ...
    changed = out.tokens.clone()
    changed[:, 5] = torch.where(changed[:, 5] == 64, 65, 64)
    before, after = policy.log_probs(obs, INSTRUCTIONS, out.tokens), policy.log_probs(obs, INSTRUCTIONS, changed)
    assert torch.equal(before[:, [i for i in range(56) if i != 5]], after[:, [i for i in range(56) if i != 5]])
    # ... and the chunk log-prob (what the ratio of the whole chunk uses) is the sum over 56 tokens
    log_p = policy.action_log_probs(policy.parallel_pass(obs, INSTRUCTIONS)[0])  # [B, 56, 256]
    joint = sum(log_p[:, j].gather(-1, (out.tokens[:, j : j + 1] - 64)).squeeze(-1) for j in range(56))
    torch.testing.assert_close(before.sum(-1), joint, rtol=0, atol=1e-4)


def test_openvla_tokens_depend_on_the_previous_ones(tiny_folder, obs):
    policy = OpenVLAPolicy(OpenVLAPolicy.Options(path=tiny_folder))
    out = policy.act(obs, INSTRUCTIONS, greedy=True)
    changed = out.tokens.clone()
    changed[:, 0] = torch.where(changed[:, 0] == 64, 65, 64)
    before, after = policy.log_probs(obs, INSTRUCTIONS, out.tokens), policy.log_probs(obs, INSTRUCTIONS, changed)
    assert not torch.equal(before[:, 1:], after[:, 1:])


# --- training --------------------------------------------------------------------------------------


def _rollout_and_update(policy):
    from pcm_core.config import PCMConfig, TrainConfig
    from pcm_core.learner import Learner
    from pcm_core.profiling import StepTimer
    from pcm_core.registry import get_registry
    from pcm_core.rollout import GroupSpec, collect

    registry = get_registry()
    env = registry.get("env", "tabletop").cls(registry.get("env", "tabletop").cls.Options(max_steps=8), num_envs=4)
    batch = collect(env, policy, [GroupSpec(0, 0), GroupSpec(1, 1)], 2, generator=torch.Generator().manual_seed(0))
    batch.rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])  # mixed outcomes: every advantage is non-zero
    build = lambda kind, name: registry.get(kind, name).cls(registry.get(kind, name).cls.Options())  # noqa: E731
    learner = Learner(policy, build("segmenter", "progress"), build("proxy", "success_failure"),
                      build("sampler", "pcm"), PCMConfig(budget=2), TrainConfig(lr=1e-2, micro_batch_size=4))
    learner.update(batch, StepTimer())
    return batch


def test_pcm_step_with_lora_changes_only_the_adapters(tiny_folder):
    policy = oft(tiny_folder, lora={"rank": 4, "alpha": 8})
    before = {k: v.clone() for k, v in policy.module.state_dict().items()}
    trainable = {n for n, p in policy.module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    _rollout_and_update(policy)
    after = policy.module.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_B" in k or "lora_A" in k for k in changed), sorted(changed)[:5]
    assert any("language_model" in k for k in changed) and any("vision_backbone" in k for k in changed)


def test_bf16_weights_with_float32_adapters_act_and_score(tiny_folder, obs):
    policy = oft(tiny_folder, lora={"rank": 4, "alpha": 8}, weights_dtype="bfloat16")
    dtypes = {name: p.dtype for name, p in policy.module.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert dtypes["vla.language_model.model.embed_tokens.weight"] == torch.bfloat16
    out = policy.act(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(0))
    scored = policy.log_probs(obs, INSTRUCTIONS, out.tokens)
    scored.sum().backward()
    assert policy.vla.language_model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.grad is not None
    torch.testing.assert_close(scored.detach(), out.logprobs, rtol=0, atol=1e-5)


def with_trained_adapters(policy):
    """Adapters that change the function (lora_B starts at zero, so fresh adapters do not)."""
    with torch.no_grad():
        for name, parameter in policy.module.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return policy


def test_lora_is_merged_on_export(tiny_folder, obs, tmp_path):
    policy = with_trained_adapters(oft(tiny_folder, lora={"rank": 4, "alpha": 8}))
    logits, _ = policy.parallel_pass(obs, INSTRUCTIONS)
    policy.save(str(tmp_path / "merged"))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as exported:  # one shard of 5 GB at most
        assert set(exported.keys()) == published_keys(2, 2, 2)  # no adapter names in the export
    merged, _ = oft(str(tmp_path / "merged")).parallel_pass(obs, INSTRUCTIONS)
    torch.testing.assert_close(merged, logits, rtol=0, atol=1e-4)


def test_lora_adapter_export_on_its_base_gives_the_merged_model(tiny_folder, obs, tmp_path):
    import json

    from safetensors import safe_open

    policy = with_trained_adapters(oft(tiny_folder, lora={"rank": 4, "alpha": 8, "export": "both"}))
    trained, _ = policy.parallel_pass(obs, INSTRUCTIONS)
    policy.save(str(tmp_path / "out"))
    adapter = tmp_path / "out" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == ("LORA", 4, 8, tiny_folder)
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as saved:
        keys = set(saved.keys())
    lora_weights = {n for n, p in policy.module.named_parameters() if p.requires_grad}
    assert len(keys) == len(lora_weights) and all(k.startswith("base_model.model.") and ".default." not in k for k in keys)

    merged, _ = oft(str(tmp_path / "out")).parallel_pass(obs, INSTRUCTIONS)
    adapted = oft(tiny_folder, adapter=str(adapter))
    based, _ = adapted.parallel_pass(obs, INSTRUCTIONS)
    torch.testing.assert_close(based, merged, rtol=0, atol=1e-5)
    torch.testing.assert_close(based, trained, rtol=0, atol=1e-5)
    assert {n for n, p in adapted.module.named_parameters() if p.requires_grad} == lora_weights  # training goes on in it


def test_adapter_only_export_is_small_and_a_wrong_base_is_an_error(tiny_folder, tmp_path):
    from pcm_core.errors import ConfigError

    policy = oft(tiny_folder, lora={"rank": 4, "alpha": 8, "export": "adapter"})
    policy.save(str(tmp_path / "adapter"))
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    saved = load_file(str(weights))
    save_file(dict(sorted(saved.items())[1:]), str(weights))  # one adapter weight short: trained on another model
    with pytest.raises(ConfigError, match="1 adapter weights missing"):
        oft(tiny_folder, adapter=str(tmp_path / "adapter"))
    with pytest.raises(ConfigError, match="not a peft adapter folder"):
        oft(tiny_folder, adapter=str(tmp_path))


def test_gradient_checkpointing_gives_the_same_gradients(tiny_folder, obs):
    grads = []
    for flag in (False, True):
        policy = oft(tiny_folder, gradient_checkpointing=flag)
        policy.module.train()
        out = policy.act(obs, INSTRUCTIONS, greedy=True)
        policy.log_probs(obs, INSTRUCTIONS, out.tokens).sum().backward()
        grads.append(policy.vla.vision_backbone.featurizer.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# --- errors ----------------------------------------------------------------------------------------


def _two_lines(error: Exception) -> list[str]:
    lines = str(error).splitlines()
    assert len(lines) == 2 and lines[1].startswith("Fix: "), str(error)
    return lines


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointFolderError) as info:
        oft(str(tmp_path / "nothing-here"))
    assert "no checkpoint folder at" in _two_lines(info.value)[0]


def test_partial_folder_is_one_clear_error(tiny_folder, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_folder, partial)
    shard = sorted(partial.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointFolderError) as info:
        oft(str(partial))
    assert f"lists {shard.name}, which is missing" in _two_lines(info.value)[0]
    (partial / "config.json").unlink()
    with pytest.raises(CheckpointFolderError) as info:
        oft(str(partial))
    assert "has no config.json" in _two_lines(info.value)[0]


def test_mismatched_weights_are_one_clear_error(tiny_folder, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other)
    config = json.loads((other / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 3
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFolderError) as info:
        oft(str(other))
    assert "9 missing and 0 unexpected parameters" in _two_lines(info.value)[0]  # the 9 tensors of layer 2


def test_hub_id_without_network_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointFolderError) as info:
        oft("moojink/openvla-7b-oft-finetuned-libero-spatial")
    first, fix = _two_lines(info.value)
    assert "could not fetch 'moojink/openvla-7b-oft-finetuned-libero-spatial'" in first
    assert "hf download moojink/openvla-7b-oft-finetuned-libero-spatial --local-dir DIR" in fix


def test_cli_prints_the_error_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [PCM_RUN, "--policy", "openvla-oft", "--set", f"policy.options.path={tmp_path}/missing",
         "--set", f"train.output_dir={tmp_path}/runs", "--set", "tracking.enabled=false"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "no checkpoint folder at" in lines[0] and lines[1].startswith("Fix: ")


@pytest.mark.parametrize("name", ["libero_openvla.yaml", "libero_openvla_oft.yaml"])
def test_shipped_openvla_configs_validate(name, capsys):
    from pcm_core.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / name
    main(["--dry-run", "--config", str(config), "--set", "env.name=tabletop", "--set", "env.options={}"])
    assert "config valid" in capsys.readouterr().out


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pcm_run_trains_openvla_oft_on_tabletop(tiny_folder, tmp_path):
    proc = subprocess.run(
        [PCM_RUN, "--env", "tabletop", "--policy", "openvla-oft", "--set", f"policy.options.path={tiny_folder}",
         "--set", "policy.options.chunk_size=4", "--set", "policy.options.unnorm_key=tabletop",
         "--set", "policy.options.image_keys=[image]", "--set", "env.options.max_steps=16", "--set", "train.steps=2", "--set", "train.tasks_per_step=2",
         "--set", "train.group_size=2", "--set", "train.eval_episodes=2", "--set", "train.threads=1",
         "--set", f"train.output_dir={tmp_path}/runs", "--set", "tracking.enabled=false"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = next((tmp_path / "runs").glob("*/policy"))
    assert (saved / "config.json").is_file() and (saved / "dataset_statistics.json").is_file()
    reloaded = oft(str(saved))  # the exported policy loads back through the same path
    assert reloaded.tokens_per_chunk == 14
    assert math.isfinite(float(next(reloaded.module.parameters()).detach().sum()))


@pytest.mark.slow
def test_7b_benchmark_script_runs_on_a_tiny_model(tmp_path):
    from benchmarks.openvla_7b import main

    assert main(["--device", "cpu", "--architecture", "tiny", "--groups", "1", "--chunks", "4", "--budget", "1",
                 "--image-size", "28", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "openvla_7b.json").read_text())
    assert [s[0]["kept_chunks"] for s in (result["samples"]["grpo"], result["samples"]["pcm"])] == [8, 2]


def test_proprio_statistics_of_another_width_are_not_applied(tiny_folder, obs):
    """The tabletop's 5-number proprio and the 8-wide statistics of 'tabletop' in the tiny
    checkpoint: the proprio goes in as is, with a warning, instead of normalised with the wrong numbers."""
    policy = oft(tiny_folder)
    five = {**obs, "proprio": torch.full((obs["proprio"].shape[0], 5), 0.5)}
    with pytest.warns(UserWarning, match="has 5 numbers but the proprio statistics of 'tabletop' have 8"):
        token = policy.extra_tokens(five, torch.zeros(five["proprio"].shape[0], 1, 1))
    projector = policy.model.proprio_projector
    padded = torch.nn.functional.pad(five["proprio"], (0, projector.proprio_dim - 5))
    torch.testing.assert_close(token[:, 0], projector(padded))


def test_unnorm_key_falls_back_to_the_no_noops_statistics():
    """As the published LIBERO evaluation: `libero_spatial` finds `libero_spatial_no_noops`."""
    from types import SimpleNamespace

    from pcm_openvla.build import dataset_stats

    config = SimpleNamespace(norm_stats={"libero_spatial_no_noops": {"action": "spatial"}, "bridge": {"action": "b"}})
    assert dataset_stats(config, "libero_spatial") == {"action": "spatial"}
    assert dataset_stats(config, "bridge") == {"action": "b"}
    with pytest.raises(Exception, match="unnorm_key 'libero_goal' is not in"):
        dataset_stats(config, "libero_goal")
