"""Env backends in worker processes, so that a crashing simulator costs trajectories, not the run.

:class:`SubprocessEnv` splits the ``num_envs`` envs of a step across ``workers`` processes (worker
``i`` holds a contiguous slice of ``n_i`` envs; sizes differ by at most one) and builds
``cls(options, num_envs=n_i, seed=seed_i)`` of the configured backend inside each. Processes start
with ``forkserver`` (``spawn`` where that is missing), never ``fork``: simulators holding EGL or
Vulkan contexts hang in a forked child. Only picklable things cross the process boundary: the env
class by module path, its options as a dict, numpy arrays over pipes. The child gets the parent's
``sys.path``, environment variables and working directory, as with ``spawn``.

A worker that dies (killed, segfault, EOF on its pipe) is restarted: its env is rebuilt and reset to
the episode starts of the last ``reset``. Its envs then report ``done`` and ``lost`` (in
:class:`StepResult`) until the next ``reset``, so the rollout drops their trajectories of this
episode while the other envs go on; ``restarts`` counts the restarts. A worker whose env raises
while being built, or that dies ``max_failures`` times without completing a step in between, stops
the run with an :class:`EnvWorkerError` naming it and the last error.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import sys
import traceback
import weakref
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Sequence

import numpy as np
from pydantic import ValidationError

from pcm_core.config import EnvConfig, ResolvedComponent, format_validation_error
from pcm_core.errors import PcmError
from pcm_core.interfaces import EnvBackend, StepResult

MAX_FAILURES = 3
"""Deaths of one worker, without a completed step in between, that stop the run."""

CLOSE_TIMEOUT_S = 10.0

ANSWER_TIMEOUT_S: float = EnvConfig.model_fields["worker_timeout_s"].default
"""Default seconds a worker may take over one command before it counts as hung (the default of
``env.worker_timeout_s``)."""

logger = logging.getLogger(__name__)


class EnvWorkerError(PcmError):
    """An env worker process cannot build its env or keeps dying."""

    exit_code = 1


class WorkerDied(Exception):
    """A worker process ended (or closed its pipe) before answering; ``str`` says how."""


def _describe(exc: BaseException) -> str:
    """One line naming an exception raised while building an env."""
    if isinstance(exc, ValidationError):
        return format_validation_error(exc, prefix="env.options.").splitlines()[0]
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _serve(
    conn: Connection,
    module: str,
    qualname: str,
    options: dict[str, Any],
    num_envs: int,
    seed: int,
    parent: dict[str, Any],
) -> None:
    """Worker process: build the env, then answer ``(command, argument)`` messages until ``close``
    or EOF (the parent is gone). Answers are ``("ok", value)``, ``("error", traceback)`` for an
    exception in an env method, or ``("build_error", line)`` when the env cannot be built."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it finishes the step first
    sys.path[:] = parent["sys_path"]
    os.environ.clear()
    os.environ.update(parent["environ"])
    os.chdir(parent["cwd"])
    try:
        cls: Any = importlib.import_module(module)
        for name in qualname.split("."):
            cls = getattr(cls, name)
        env = cls(cls.Options.model_validate(options), num_envs=num_envs, seed=seed)
    except Exception as exc:
        conn.send(("build_error", _describe(exc)))
        return
    conn.send(("ok", (env.num_tasks, env.max_steps)))
    methods = {
        "reset": lambda arg: env.reset(*arg),
        "step": env.step,
        "step_chunk": env.step_chunk,
        "expert_actions": lambda arg: env.expert_actions(),
        "render": env.render,
    }
    while True:
        try:
            command, argument = conn.recv()
        except EOFError:
            break
        if command == "close":
            env.close()
            break
        try:
            answer = ("ok", methods[command](argument))
        except Exception:
            answer = ("error", traceback.format_exc())
        conn.send(answer)


@dataclass
class _Worker:
    """One worker process and the slice of the batch its env holds."""

    index: int
    envs: slice
    seed: int
    process: Any = None
    conn: Connection | None = None
    failures: int = 0  # deaths since its last completed step

    @property
    def size(self) -> int:
        return self.envs.stop - self.envs.start


def _stop(worker: _Worker, timeout: float) -> None:
    """Close the pipe and end the process (asked politely first when it may still be alive)."""
    if worker.conn is not None:
        try:
            worker.conn.send(("close", None))
        except (OSError, ValueError):
            pass
        worker.conn.close()
        worker.conn = None
    if worker.process is not None:
        worker.process.join(timeout)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout)
        worker.process = None


def _shutdown(workers: list[_Worker]) -> None:
    for worker in workers:
        _stop(worker, CLOSE_TIMEOUT_S)


def _context() -> Any:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])  # the server imports numpy/torch once, not every worker
    return context


def _as_lost(result: StepResult) -> StepResult:
    """``result`` of a restarted worker: every env done, nothing solved, all lost."""
    size = len(result.done)
    return replace(
        result, success=np.zeros(size, dtype=bool), done=np.ones(size, dtype=bool), lost=np.ones(size, dtype=bool)
    )


class SubprocessEnv(EnvBackend):
    """``num_envs`` envs of the backend ``component`` in ``workers`` processes (module docstring).

    ``restarts`` counts worker restarts; ``worker_pids`` lists the current worker processes.
    """

    def __init__(
        self,
        component: ResolvedComponent,
        num_envs: int,
        seed: int = 0,
        workers: int = 1,
        max_failures: int = MAX_FAILURES,
        timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        super().__init__(component.options, num_envs, seed)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.component = component
        self.max_failures = max_failures
        self.timeout_s = timeout_s
        self.restarts = 0
        self._context = _context()
        count = min(workers, num_envs)
        sizes = [num_envs // count + (1 if i < num_envs % count else 0) for i in range(count)]
        starts = np.cumsum([0] + sizes).tolist()
        seeds = np.random.SeedSequence(seed).generate_state(count).tolist()  # independent worker streams
        self._workers = [_Worker(i, slice(starts[i], starts[i + 1]), int(seeds[i])) for i in range(count)]
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)
        self._lost = np.zeros(num_envs, dtype=bool)  # [B] envs whose episode died with their worker
        self._finished: dict[int, StepResult] = {}  # worker index -> its (all lost) last result
        self._starts: tuple[list[int], list[int]] | None = None  # the last reset's task ids and init states
        try:
            for worker in self._workers:
                self._launch(worker)
            metas = []
            for worker in self._workers:
                try:
                    metas.append(self._answer(worker, "building its env"))
                except WorkerDied as died:
                    metas.append(self._revive(worker, str(died)))
        except BaseException:
            self.close()
            raise
        self._num_tasks, self._max_steps = metas[0]

    @property
    def num_tasks(self) -> int:
        return self._num_tasks

    @property
    def max_steps(self) -> int:
        return self._max_steps

    @property
    def worker_pids(self) -> list[int]:
        """Process id of every worker, in batch order."""
        return [worker.process.pid for worker in self._workers]

    # --- the EnvBackend interface ---

    def reset(self, task_ids: Sequence[int], init_states: Sequence[int]) -> tuple[dict[str, np.ndarray], list[str]]:
        task_ids, init_states = [int(t) for t in task_ids], [int(s) for s in init_states]
        if len(task_ids) != self.num_envs or len(init_states) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} task ids and {self.num_envs} initial states")
        self._starts = (task_ids, init_states)
        self._lost[:] = False
        self._finished.clear()
        answers = self._scatter("reset", {w.index: (task_ids[w.envs], init_states[w.envs]) for w in self._workers})
        results = [answers[w.index] for w in self._workers]
        obs = {key: np.concatenate([r[0][key] for r in results]) for key in results[0][0]}
        return obs, [text for r in results for text in r[1]]

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every worker whose envs are not lost; a worker that dies is restarted and its envs
        are reported ``done`` and ``lost`` (``[B]`` bool) until the next ``reset``."""
        return self._run_steps("step", actions, 1)[0]

    def step_chunk(self, actions: np.ndarray) -> list[StepResult]:
        """The K actions ``[B, K, D]`` of a chunk as one command per worker: its env's own
        ``step_chunk`` (which may skip rendering the observations no policy sees), one pipe round
        trip instead of K. Lost envs as in :meth:`step`."""
        return self._run_steps("step_chunk", actions, np.asarray(actions).shape[1])

    def _run_steps(self, command: str, actions: np.ndarray, steps: int) -> list[StepResult]:
        """``command`` (``step`` or ``step_chunk``) on every worker still running: ``steps`` results."""
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"actions must have {self.num_envs} rows, got {list(actions.shape)}")
        active = [w for w in self._workers if w.index not in self._finished]
        answers = self._scatter(command, {w.index: actions[w.envs] for w in active}, completes_step=True)
        per_worker = []  # [workers][steps]
        for worker in self._workers:
            if worker.index in self._finished:
                per_worker.append([self._finished[worker.index]] * steps)
                continue
            results = answers[worker.index] if command == "step_chunk" else [answers[worker.index]]
            if self._lost[worker.envs].any():  # died in this call (or in expert_actions/render before it)
                results = [_as_lost(result) for result in results]
                self._finished[worker.index] = results[-1]
            per_worker.append(results)
        return [self._merge([results[k] for results in per_worker]) for k in range(steps)]

    def _merge(self, results: list[StepResult]) -> StepResult:
        """One :class:`StepResult` ``[B]`` from the workers' ``results``, in batch order. ``obs``
        keeps the keys every worker reported (an unrendered step of ``step_chunk`` has none)."""
        keys = [key for key in results[0].obs if all(key in r.obs for r in results)]
        return StepResult(
            obs={key: np.concatenate([r.obs[key] for r in results]) for key in keys},
            success=np.concatenate([r.success for r in results]),
            done=np.concatenate([r.done for r in results]),
            info={key: np.concatenate([r.info[key] for r in results]) for key in results[0].info},
            lost=self._lost.copy(),
        )

    def expert_actions(self) -> np.ndarray | None:
        answers = self._scatter("expert_actions", {w.index: None for w in self._workers})
        parts = [answers[w.index] for w in self._workers]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    def render(self, index: int) -> np.ndarray | None:
        worker = next(w for w in self._workers if w.envs.start <= index < w.envs.stop)
        return self._scatter("render", {worker.index: index - worker.envs.start})[worker.index]

    def close(self) -> None:
        self._finalizer()

    # --- processes ---

    def _launch(self, worker: _Worker) -> None:
        """Start ``worker``'s process; it builds its env and then says so (see :meth:`_answer`)."""
        cls = self.component.cls
        parent_end, child_end = self._context.Pipe()
        parent = {"sys_path": list(sys.path), "environ": dict(os.environ), "cwd": os.getcwd()}
        process = self._context.Process(
            target=_serve,
            args=(child_end, cls.__module__, cls.__qualname__, self.component.options.model_dump(), worker.size,
                  worker.seed, parent),
            name=f"pcm-env-worker-{worker.index}",
        )
        try:
            process.start()
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        worker.process, worker.conn = process, parent_end

    def _label(self, worker: _Worker) -> str:
        return f"env worker {worker.index} (env '{self.component.name}', envs {worker.envs.start}..{worker.envs.stop - 1})"

    def _answer(self, worker: _Worker, doing: str) -> Any:
        """Wait for ``worker``'s answer; raises :class:`WorkerDied` when its process ends first or
        gives no answer within ``timeout_s`` (then it is killed: a hung simulator counts as dead)."""
        assert worker.conn is not None
        ready = wait([worker.conn, worker.process.sentinel], timeout=self.timeout_s)
        if not ready:
            worker.process.kill()
            worker.process.join(CLOSE_TIMEOUT_S)
            raise WorkerDied(f"gave no answer for {self.timeout_s:g} s (killed) while {doing}")
        try:
            if worker.conn not in ready:
                raise EOFError
            status, value = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(CLOSE_TIMEOUT_S)
            code = worker.process.exitcode
            if code is None:
                how = "closed its pipe"
            elif code < 0:
                how = f"was killed by {signal.Signals(-code).name}"
            else:
                how = f"exited with code {code}"
            raise WorkerDied(f"{how} while {doing}") from None
        if status == "build_error":
            raise EnvWorkerError(
                f"{self._label(worker)} cannot build its env: {value}\n"
                f"Fix: check env.name and env.options; the backend must import in a fresh process "
                f"(python -c 'import {self.component.cls.__module__}')"
            )
        if status == "error":
            raise RuntimeError(f"{self._label(worker)} raised while {doing}:\n{value}")
        return value

    def _revive(self, worker: _Worker, reason: str, command: str | None = None, argument: Any = None) -> Any:
        """Restart the dead ``worker`` (env rebuilt and reset to the last episode starts), run
        ``command`` on it and return its answer; raises :class:`EnvWorkerError` once the worker
        has died ``max_failures`` times without completing a step in between."""
        while True:
            worker.failures += 1
            _stop(worker, CLOSE_TIMEOUT_S)
            if worker.failures >= self.max_failures:
                raise EnvWorkerError(
                    f"{self._label(worker)} died {worker.failures} times in a row; last it {reason}.\n"
                    "Fix: read the worker's output above, or run with env.workers=0 to get the env's own traceback"
                )
            self.restarts += 1
            logger.warning("%s %s; restarting it, its envs' episodes are lost", self._label(worker), reason)
            try:
                self._launch(worker)
                answer = self._answer(worker, "building its env")
                if self._starts is not None:
                    task_ids, init_states = self._starts
                    answer = self._request(worker, "reset", (task_ids[worker.envs], init_states[worker.envs]))
                if command is not None and command != "reset":
                    answer = self._request(worker, command, argument)
                return answer
            except WorkerDied as died:
                reason = str(died)

    def _request(self, worker: _Worker, command: str, argument: Any) -> Any:
        assert worker.conn is not None
        try:
            worker.conn.send((command, argument))
        except (OSError, ValueError):
            pass  # the process is gone: _answer finds out how
        return self._answer(worker, f"running {command}")

    def _scatter(self, command: str, arguments: dict[int, Any], completes_step: bool = False) -> dict[int, Any]:
        """Send ``command`` with ``arguments[i]`` to every worker ``i`` named there, then gather the
        answers (workers run in parallel). A worker that died is revived and answers from its
        restarted env; its envs are marked lost unless the command was ``reset``."""
        workers = [w for w in self._workers if w.index in arguments]
        for worker in workers:
            assert worker.conn is not None
            try:
                worker.conn.send((command, arguments[worker.index]))
            except (OSError, ValueError):
                pass  # the process is gone: _answer finds out how
        answers: dict[int, Any] = {}
        dead: list[tuple[_Worker, str]] = []
        errors: list[BaseException] = []
        for worker in workers:
            try:
                answers[worker.index] = self._answer(worker, f"running {command}")
                if completes_step:
                    worker.failures = 0
            except WorkerDied as died:
                dead.append((worker, str(died)))
            except (EnvWorkerError, RuntimeError) as exc:  # read every answer first: pipes stay in step
                errors.append(exc)
        if errors:
            raise errors[0]
        for worker, reason in dead:
            if command == "step_chunk":  # its envs are lost anyway: replay one step, not the chunk's K
                chunk = arguments[worker.index]  # [b, K, D]
                answers[worker.index] = [self._revive(worker, reason, "step", chunk[:, 0])] * chunk.shape[1]
            else:
                answers[worker.index] = self._revive(worker, reason, command, arguments[worker.index])
            if command != "reset":
                self._lost[worker.envs] = True
        return answers
