"""Rollouts in Ray actors: each actor owns a vector env and a policy copy for batched inference.

The learner process draws a step's groups as it does in-process and splits them over the actors
(actor ``a`` always takes the same number of groups, so its vector env keeps its size). The weights
are put into Ray's object store once per update; every call carries a reference and a version,
and an actor loads the weights only when the version changed (or after a restart). A lost actor
is restarted by Ray (``distributed.max_restarts``); the step goes on with the trajectories that
arrived, and the metrics and the console say so.

Needs the ``[distributed]`` extra (``ray``); imported only when ``distributed.rollout_workers > 0``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pcm_core.collectors import Collector
from pcm_core.config import ResolvedComponent, RunConfig
from pcm_core.errors import MissingBackendError, PcmError
from pcm_core.interfaces import EnvBackend, PolicyBackend
from pcm_core.rollout import GroupSpec, collect, concat
from pcm_core.types import RolloutBatch


class RolloutWorkersLost(PcmError):
    """Every rollout actor of a step was lost, more often than they may be restarted."""

    exit_code = 1


class RolloutActor:
    """Lives in a Ray worker process (``ray.remote`` is applied by :class:`RayRollouts`)."""

    def __init__(self, env: ResolvedComponent, policy: ResolvedComponent, num_envs: int, seed: int, threads: int) -> None:
        torch.set_num_threads(threads)
        self.env: EnvBackend = env.build(num_envs=num_envs, seed=seed)
        self.policy: PolicyBackend = policy.build()
        self.policy.module.eval()
        self.version = -1

    def pid(self) -> int:
        return os.getpid()

    def collect(
        self, weights: list[Any], version: int, groups: Sequence[GroupSpec], group_size: int, seed: int, greedy: bool
    ) -> RolloutBatch:
        """Episodes of ``groups`` with the weights of ``version`` (``weights``: ``[ObjectRef]``, resolved
        only when this actor holds another version)."""
        if version != self.version:
            import ray

            self.policy.module.load_state_dict(ray.get(weights[0]))
            self.version = version
        generator = torch.Generator().manual_seed(seed)
        return collect(self.env, self.policy, groups, group_size, generator, greedy=greedy)


def require_ray(workers: int) -> None:
    """Raise :class:`MissingBackendError` when ``workers`` (``distributed.rollout_workers``) > 0
    and Ray is not installed (the CLI checks this before anything heavy starts)."""
    if workers > 0 and importlib.util.find_spec("ray") is None:
        raise MissingBackendError(
            f"distributed.rollout_workers = {workers} needs Ray, which is not installed.\n"
            'Fix: pip install "pcm-vla[distributed]", or --set distributed.rollout_workers=0'
        )


class RayRollouts(Collector):
    """A :class:`~pcm_core.collectors.Collector` whose episodes run in ``distributed.rollout_workers``
    Ray actors (drawing groups, dynamic sampling and evaluation are the collector's own)."""

    def __init__(
        self, env: EnvBackend, policy: PolicyBackend, config: RunConfig, rng: np.random.Generator,
        generator: torch.Generator, components: dict[str, ResolvedComponent], log: Callable[[str], Any] = print,
    ) -> None:
        super().__init__(env, policy, config, rng, generator)
        require_ray(config.distributed.rollout_workers)
        import ray

        settings, train = config.distributed, config.train
        workers, groups = settings.rollout_workers, train.tasks_per_step
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:  # joins the cluster in RAY_ADDRESS when set, else starts a local one
            ray.init(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
        self.ray = ray
        self.log = log
        self.timeout_s = settings.rollout_timeout_s
        self.max_restarts = settings.max_restarts
        self.shares = [groups // workers + int(a < groups % workers) for a in range(workers)]  # groups per actor
        actor_class = ray.remote(num_cpus=1, max_restarts=settings.max_restarts, max_task_retries=0)(RolloutActor)
        threads = train.threads or 1
        self.actors = [
            actor_class.remote(components["env"], components["policy"], share * train.group_size, train.seed + 1 + a, threads)
            for a, share in enumerate(self.shares)
        ]
        self.version = -1
        self.weights: Any = None
        self.lost: list[int] = []
        self._restarting: set[int] = set()  # actors lost since the last step
        self.trajectories = 0
        self.publish()

    def pids(self) -> list[int]:
        """Process id of every actor (for tests and ``ps``)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def publish(self) -> dict[str, float]:
        """Put the policy's current weights into the object store for the next calls; returns the
        metrics of the rollouts since the last publish (actors lost, trajectories that arrived)."""
        state = {name: tensor.detach().cpu() for name, tensor in self.policy.module.state_dict().items()}
        self.weights = self.ray.put(state)
        self.version += 1
        metrics = {"rollout/workers_lost": float(len(self.lost)), "rollout/trajectories": float(self.trajectories)}
        self.lost, self.trajectories = [], 0
        return metrics

    def collect(self, groups: Sequence[GroupSpec], group_size: int, greedy: bool = False) -> RolloutBatch:
        """The episodes of ``groups`` over the actors."""
        from ray.exceptions import GetTimeoutError, RayActorError

        for attempt in range(self.max_restarts + 1):
            self._wait_for_restarts()
            seeds = torch.randint(0, 2**62, (len(self.actors),), generator=self.generator).tolist()
            bounds = [sum(self.shares[:a]) for a in range(len(self.actors) + 1)]
            futures = [
                actor.collect.remote([self.weights], self.version, list(groups[bounds[a] : bounds[a + 1]]), group_size, seeds[a], greedy)
                for a, actor in enumerate(self.actors)
            ]
            arrived: list[RolloutBatch] = []
            for a, future in enumerate(futures):
                try:
                    arrived.append(self.ray.get(future, timeout=self.timeout_s))
                except (RayActorError, GetTimeoutError) as exc:
                    self.lost.append(a)
                    self._restarting.add(a)
                    if isinstance(exc, GetTimeoutError):
                        self.ray.kill(self.actors[a], no_restart=False)  # a hung actor is restarted too
                    self.log(
                        f"rollout actor {a} lost ({type(exc).__name__}); Ray restarts it "
                        f"(max_restarts={self.max_restarts}); this step goes on without its {self.shares[a] * group_size} trajectories"
                    )
            if arrived:
                batch = concat(arrived)
                self.trajectories += batch.num_trajectories
                return batch
        raise RolloutWorkersLost(
            f"every rollout actor was lost in {self.max_restarts + 1} attempts.\n"
            "Fix: look at the Ray logs (/tmp/ray/session_latest/logs), or --set distributed.max_restarts=N with a larger N"
        )

    def _wait_for_restarts(self) -> None:
        """Wait (up to ``rollout_timeout_s``) until the actors lost earlier answer again: calls sent to
        an actor while Ray restarts it would fail."""
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + self.timeout_s
        for a in sorted(self._restarting):
            while time.monotonic() < deadline:
                try:
                    self.ray.get(self.actors[a].pid.remote(), timeout=max(deadline - time.monotonic(), 0.1))
                    break
                except (RayActorError, GetTimeoutError):
                    time.sleep(0.5)
        self._restarting.clear()

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        if self._owns_ray:
            self.ray.shutdown()
