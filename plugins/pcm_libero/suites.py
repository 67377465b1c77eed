"""The five standard LIBERO suites: names, published episode limits, task lists.

Episode limits are the ``max_steps`` of the published OpenVLA and OpenVLA-OFT LIBERO evaluations
(``experiments/robot/libero/run_libero_eval.py`` in openvla/openvla and moojink/openvla-oft):
slightly above the longest training demonstration of each suite. Task ids are positions in
LIBERO's ``libero_task_map`` (the order of ``benchmark.get_benchmark_dict()[suite]()`` with the
default ``task_order_index=0``), the ids the published evaluations loop over.
"""

from __future__ import annotations

import difflib
from typing import Literal, Sequence

from pcm_core.errors import ConfigError

Suite = Literal["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"]

MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,  # longest training demo: 193 steps
    "libero_object": 280,  # 254
    "libero_goal": 300,  # 270
    "libero_10": 520,  # 505
    "libero_90": 400,  # 373
}
"""Published per-suite episode limits in policy steps (settle steps not counted)."""


def task_names(suite: str) -> list[str]:
    """The task names of ``suite`` in LIBERO's order (imports LIBERO's task map, nothing heavy)."""
    from libero.libero.benchmark.libero_suite_task_map import libero_task_map

    return list(libero_task_map[suite])


def resolve_tasks(suite: str, tasks: Sequence[int | str] | None) -> list[int]:
    """Task ids (into ``task_names(suite)``) for ``tasks``: ids, names, or None for all.

    A name may be given with or without its ``.bddl`` suffix. Raises :class:`ConfigError` naming
    the bad entry and the nearest valid name.
    """
    names = task_names(suite)
    if tasks is None:
        return list(range(len(names)))
    ids: list[int] = []
    for task in tasks:
        if isinstance(task, int):
            if not 0 <= task < len(names):
                raise ConfigError(
                    f"env.options.tasks: task id {task} is not in {suite} (ids 0..{len(names) - 1}).\n"
                    f"Fix: use an id in 0..{len(names) - 1} or a task name"
                )
            ids.append(task)
            continue
        name = task.removesuffix(".bddl")
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"task ids 0..{len(names) - 1} or names as in docs/libero.md"
            raise ConfigError(f"env.options.tasks: '{task}' is not a task of {suite}.\nFix: {hint}")
        ids.append(names.index(name))
    return ids
