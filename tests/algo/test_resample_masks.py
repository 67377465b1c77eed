"""train.resample_masks: each update epoch backpropagates a freshly drawn mask, from the same
keep-probabilities (updated once per step)."""

import torch
from tiny_policy import TinyBackend, make_batch

from pcm_core.config import PCMConfig, TrainConfig
from pcm_core.learner import Learner
from pcm_core.profiling import StepTimer
from pcm_phases.proxies import SuccessFailureProxy
from pcm_phases.samplers import PCMSampler
from pcm_phases.segmenters import GripperSegmenter


def make_learner(**train) -> Learner:
    return Learner(
        TinyBackend(), GripperSegmenter(GripperSegmenter.Options(num_phases=2)), SuccessFailureProxy(SuccessFailureProxy.Options()),
        PCMSampler(PCMSampler.Options(allocation="pooled")), PCMConfig(budget=2), TrainConfig(**train),
    )


def batch():
    return make_batch([8, 8, 8, 8], [1, 0, 0, 1], [0, 0, 1, 1])


def test_resample_draws_another_mask_with_the_same_keep_probabilities():
    learner = make_learner()
    first = learner.select(batch())
    q_state = {k: v.clone() if torch.is_tensor(v) else v for k, v in learner.keep_probs.state_dict().items()}
    second = learner.resample(batch(), first)
    assert torch.equal(second.keep_probs, first.keep_probs)
    assert not torch.equal(second.selection.keep, first.selection.keep)
    assert second.selection.keep.sum(1).tolist() == first.selection.keep.sum(1).tolist() == [2, 2, 2, 2]
    after = learner.keep_probs.state_dict()  # the EMA of q moved once, in select()
    assert all(torch.equal(after[k], v) if torch.is_tensor(v) else after[k] == v for k, v in q_state.items())


def test_update_epochs_with_resampling_backpropagate_different_chunks(monkeypatch):
    seen = []
    learner = make_learner(update_epochs=3, resample_masks=True)
    original = learner.backward
    monkeypatch.setattr(learner, "backward", lambda compact: seen.append(compact.chunk.clone()) or original(compact))
    learner.update(batch(), StepTimer())
    assert len(seen) == 3 and not (torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2]))

    seen.clear()
    make_same = make_learner(update_epochs=3)
    original = make_same.backward
    monkeypatch.setattr(make_same, "backward", lambda compact: seen.append(compact.chunk.clone()) or original(compact))
    make_same.update(batch(), StepTimer())
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2])  # without it: the same chunks each epoch
