"""The run configuration: pydantic models are the single source of defaults.

YAML files and ``--set key=value`` overrides only change values; unknown keys are errors.
Component options (``env.options``, ``pcm.segmenter_options``, ...) are validated against the
``Options`` model of the component they name, through :func:`resolve_components`.
"""

from __future__ import annotations

import difflib
import json
import reprlib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pcm_core.errors import ConfigError
from pcm_core.fields import NumbersAreNumbers


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
"""An exponential-average coefficient of AdamW."""


MAX_SEED = 2**31 - 1
"""Largest ``train.seed``: every seed derived from it (ranks, actors, evaluation) stays below 2**32."""
MAX_YAML_NODES = 100_000
"""Largest config a YAML file or override may expand to (scalars, counting every alias expansion)."""


class Section(NumbersAreNumbers):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(Section):
    name: str = Field("tabletop", description="registered env backend")
    options: dict[str, Any] = Field(default_factory=dict, description="the env's own Options")
    workers: int = Field(
        0, ge=0, description="processes the envs of a step are split across (0: in this process); a worker that "
        "dies is restarted and its trajectories of that step are dropped (docs/reliability.md)",
    )
    worker_timeout_s: float = Field(
        600.0, gt=0.0, description="seconds an env worker may take over one command (building its env, a reset, a "
        "chunk of steps) before it counts as hung: it is killed and restarted like one that died",
    )


class PolicyConfig(Section):
    name: str = Field("tinyvla", description="registered policy backend")
    options: dict[str, Any] = Field(default_factory=dict, description="the policy's own Options")


class PCMConfig(Section):
    budget: int = Field(12, gt=0, description="B: chunks kept per trajectory (all when T_i <= B)")
    budget_scaling: Literal["fixed", "length"] = Field(
        "fixed",
        description="fixed: every trajectory keeps min(B, T_i) (the paper), a short solved episode whole; length: a "
        "trajectory of T_i chunks keeps round(B T_i / T), at least 1, T the episode horizon in chunks (the env's step "
        "limit / K), the same fraction B / T of every trajectory (2 chunks of a solved 11-chunk episode). Equal at T_i = T",
    )
    segmenter: str = Field(
        "env", description="phase segmenter; 'env' reads the phase labels the env reports (tabletop, LIBERO and "
        "ManiSkill do), 'gripper' needs none"
    )
    segmenter_options: dict[str, Any] = Field(default_factory=dict)
    proxy: str = Field("success_failure", description="variance proxy scoring each phase")
    proxy_options: dict[str, Any] = Field(default_factory=dict)
    sampler: str = Field("pcm", description="budget sampler; 'all' is plain GRPO")
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    estimator: Literal["masked", "iw", "stratified"] = Field(
        "masked", description="masked: GRPO loss over kept tokens; iw: Horvitz-Thompson 1/pi weights; stratified: "
        "the kept chunks of each phase of a trajectory carry that phase's whole GRPO (traj_sum) weight, n_ik / kept_ik "
        "each, so every phase with a kept chunk is pushed as hard as GRPO pushes it (a phase with none still loses its share)"
    )
    concentration: bool = Field(True, description="w_k proportional to v_k (off: uniform w)")
    exploration: bool = Field(True, description="mix w with a uniform floor")
    exploration_floor: float = Field(0.1, ge=0.0, le=1.0, description="eps_explore")
    online: bool = Field(True, description="EMA-update q every step (off: q frozen after the first estimate)")
    ema: float = Field(0.3, gt=0.0, le=1.0, description="eta: q <- (1 - eta) q + eta w~")


class SFTConfig(Section):
    enabled: bool = Field(True, description="behaviour-clone scripted demonstrations before RL")
    demos: int = Field(256, gt=0, description="demonstration episodes")
    execution_noise: float = Field(
        0.0, ge=0.0, description="std of noise added to the executed expert actions (labels stay clean), so demos show recoveries"
    )
    gripper_flip_prob: float = Field(
        0.05, ge=0.0, le=1.0,
        description="probability that an executed expert action has its gripper command inverted (labels stay clean), "
        "so demos show recovery from a wrong open or close",
    )
    epochs: int = Field(
        20, gt=0, description="passes over the demonstrations (tabletop: 20 give warm starts of 0.25-0.36 sampled eval "
        "success over SFT seeds 0-4, 10 gave 0.04-0.21 on earlier code)"
    )
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(32, gt=0)
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="seed of the demonstrations and the cloning; None: train.seed (a fixed value shares one warm start across RL seeds)"
    )
    cache_dir: str = Field("~/.cache/pcm-vla/warm_start", description="warm-start checkpoints are reused from here")


class TrainConfig(Section):
    steps: int = Field(50, gt=0, description="RL steps")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    tasks_per_step: int = Field(8, gt=0, description="M: groups (task + initial state) per step")
    group_size: int = Field(8, ge=2, description="G: trajectories per group")
    lr: float = Field(1e-4, gt=0.0)
    warmup_steps: int = Field(
        10, ge=0, description="optimizer updates over which the learning rate ramps linearly up to lr "
        "(Adam's first updates are sign-like: full-size steps of pure noise on a sharp warm start)"
    )
    weight_decay: float = Field(0.0, ge=0.0)
    adam_betas: tuple[Beta, Beta] = Field(
        (0.9, 0.999), description="AdamW (beta1, beta2): exponential averages of the gradient over about 1 / (1 - beta1) "
        "updates and of its square over about 1 / (1 - beta2)"
    )
    clip_low: float = Field(0.2, gt=0.0, lt=1.0, description="eps_low of the PPO clip")
    clip_high: float = Field(0.28, gt=0.0, description="eps_high (clip-higher, >= clip_low)")
    kl_coef: float = Field(
        0.01, ge=0.0, description="weight of the k3 KL to the reference policy (a frozen copy of the warm start); "
        "0 = off (no reference is built: the paper's GRPO, OpenVLA's configs); under distributed.strategy=fsdp "
        "the reference is a full, unsharded replica on every rank"
    )
    loss_aggregation: Literal["token_mean", "seq_mean", "traj_sum"] = Field(
        "seq_mean", description="seq_mean: every trajectory weighs the same (GRPO's 1/|o_i|); token_mean: every "
        "token, so long (failed) trajectories outweigh short successes when episodes end at success"
    )
    update_epochs: int = Field(1, gt=0, description="optimizer steps per rollout batch, each over the kept chunks")
    resample_masks: bool = Field(
        False, description="with update_epochs > 1, draw a fresh mask (same keep-probabilities) for each optimizer step, "
        "so the step's updates together see more of the batch"
    )
    skip_zero_advantage: bool = Field(
        True, description="trajectories whose advantage is exactly 0 (groups with equal outcomes) take no forward/backward "
        "when they carry no KL term (kl_coef 0, or kl_on_uniform_groups false): their loss term is exactly 0, the "
        "normalisers still count them, so the update is unchanged"
    )
    kl_on_uniform_groups: bool = Field(
        False, description="with kl_coef > 0, the KL term covers the kept chunks of every trajectory, so those of groups with "
        "equal outcomes take a forward/backward for the KL alone; false: only trajectories with a nonzero advantage carry "
        "it, which keeps skip_zero_advantage's saving and anchors the chunks the update moves"
    )
    micro_batch_size: int = Field(64, gt=0, description="chunks per forward/backward")
    max_grad_norm: float = Field(1.0, gt=0.0)
    guard_weights: bool = Field(
        True, description="after each optimizer step, check the trainable weights are finite and undo the step if not "
        "(counted as a skipped update); costs a copy of the trainable weights and their optimizer state during the step"
    )
    dynamic_sampling: bool = Field(False, description="refill groups whose outcomes are all equal")
    eval_every: int = Field(
        25, ge=0, description="steps between evaluations; the warm start and the last step are always evaluated (0: only those)"
    )
    eval_episodes: int = Field(64, gt=0)
    progress_every: int = Field(
        1, gt=0, description="steps between plain progress lines when stdout is not a terminal (a log file, nohup, CI); "
        "a terminal gets the live progress bar instead"
    )
    eval_greedy: bool = Field(False, description="evaluate the mode of the policy instead of sampling")
    device: Literal["auto", "cpu", "cuda"] = Field("auto")
    threads: int | None = Field(
        None, gt=0, description="torch CPU threads (None: torch's default); 1 is faster on a busy machine"
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="autocast dtype on CUDA, for rollouts, the reference and the update alike"
    )
    output_dir: str = Field("runs", description="checkpoints and local artifacts")
    checkpoint_every: int = Field(10, ge=0, description="steps between checkpoints (0: only at the end and on a stop)")
    keep_checkpoints: int = Field(3, gt=0, description="newest checkpoints kept in <run>/checkpoints")
    max_skipped_updates: int = Field(
        5, gt=0, description="consecutive updates skipped for a NaN/inf loss, gradient or update before the run stops"
    )
    sft: SFTConfig = Field(default_factory=SFTConfig)

    @model_validator(mode="after")
    def _clip_higher(self) -> "TrainConfig":
        if self.clip_high < self.clip_low:
            raise ValueError(
                f"'train.clip_high' = {self.clip_high} is below train.clip_low = {self.clip_low}.\n"
                "Fix: clip-higher needs clip_high >= clip_low"
            )
        return self


class TrackingConfig(Section):
    enabled: bool = Field(True, description="false: no tracker at all (the run folder still gets plots and videos)")
    backends: list[str] = Field(
        default_factory=lambda: ["mlflow"], description="registered trackers the run logs to (`pcm-run plugins` lists them)"
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each tracker's own Options by name, e.g. {wandb: {mode: online}}"
    )
    uri: str | None = Field(None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI or ./mlruns")
    experiment: str = Field("pcm-vla", description="MLflow experiment, W&B project")
    run_name: str | None = Field(None)
    log_policy: bool = Field(True, description="upload the final policy folder as an artifact (off for large models)")
    eval_videos: int = Field(2, ge=0, le=64, description="episodes of each evaluation written as MP4 (successes and failures)")
    train_videos: bool = Field(
        True, description="at each evaluation, an MP4 of training rollouts with a strip of each chunk's phase and whether PCM kept it"
    )

    @model_validator(mode="after")
    def _each_backend_once(self) -> "TrackingConfig":
        repeated = sorted({name for name in self.backends if self.backends.count(name) > 1})
        if repeated:
            raise ValueError(f"tracking.backends names {', '.join(repeated)} more than once")
        unused = sorted(set(self.options) - set(self.backends))
        if unused:
            raise ValueError(f"tracking.options has options for {', '.join(unused)}, which tracking.backends does not enable")
        return self


class EvaluationConfig(Section):
    """``pcm-run eval``: every task of the env x ``episodes_per_task`` initial states (LIBERO: its
    50 fixed initial states per task, the published protocol)."""

    tasks: list[int] | None = Field(None, description="task indices to evaluate; None: every task of the env")
    episodes_per_task: int = Field(50, gt=0, description="episodes per task; episode k starts from initial state k")
    greedy: bool = Field(True, description="the mode of each action-token distribution (published evaluations); false samples")
    videos_per_task: int = Field(1, ge=0, le=50, description="MP4s of the first episodes of each task, named by task, state and outcome")


class DistributedConfig(Section):
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="learner data parallelism under torchrun: ddp (replicated weights) or fsdp (FSDP2 fully_shard)"
    )
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="torch.distributed backend (auto: nccl on CUDA, else gloo)")
    rollout_workers: int = Field(0, ge=0, description="Ray rollout actors (0: rollouts in the training process)")
    max_restarts: int = Field(3, ge=0, description="times Ray restarts a lost rollout actor")
    rollout_timeout_s: float = Field(600.0, gt=0.0, description="a rollout step waits this long for its actors")
    timeout_s: float = Field(
        3600.0, gt=0.0, description="torchrun ranks wait this long in one collective, e.g. while rank 0 alone runs the "
        "SFT warm start (NCCL's own default is 10 minutes)"
    )


class RunConfig(Section):
    env: EnvConfig = Field(default_factory=EnvConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    pcm: PCMConfig = Field(default_factory=PCMConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    @model_validator(mode="after")
    def _actors_get_whole_groups(self) -> "RunConfig":
        problem = rank_problem(self, 1)
        if problem is not None:
            raise ValueError(problem)
        return self


def rank_problem(config: RunConfig, world: int) -> str | None:
    """Why a step of ``config`` cannot be split over ``world`` ranks (problem, then fix), or None:
    every rank trains on whole groups, and every rollout actor of a rank runs whole groups of that
    rank's share."""
    groups, workers = config.train.tasks_per_step, config.distributed.rollout_workers
    ranks = f"{world} rank{'s' if world > 1 else ''}"
    if groups < world:
        return (
            f"train.tasks_per_step = {groups} is below the {ranks} (--nproc {world}), and each rank trains on whole groups.\n"
            f"Fix: --set train.tasks_per_step={world} (or more), or --nproc {groups}"
        )
    smallest = groups // world  # groups of the smallest share
    if workers > smallest:
        return (
            f"distributed.rollout_workers = {workers} is more than the {smallest} groups a rank gets "
            f"(train.tasks_per_step = {groups} over {ranks}), and each actor runs whole groups.\n"
            f"Fix: --set distributed.rollout_workers={smallest} or fewer, or --set train.tasks_per_step={workers * world}"
        )
    return None


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the field path ``loc`` (for key suggestions)."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def format_validation_error(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """Two lines: what is wrong with which key or value, and how to fix it.

    ``prefix`` is prepended to the key path (e.g. ``"env.options."`` for a component's options).
    """
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    reason = err.get("ctx", {}).get("error") if err["type"] == "value_error" else None
    if reason is not None and "\nFix: " in str(reason):  # a cross-field rule of this project, already two lines
        return str(reason)
    if not loc:
        return _model_error(err, prefix)
    key = prefix + ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        owner = model if model is not None else _model_at(loc[:-1])
        valid = sorted(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown key '{key}'.\nFix: {hint}valid keys: {', '.join(valid) or 'none'}"
    got = err.get("input")
    shown = short_repr(got) if not isinstance(got, dict) else "a mapping"
    where = "`pcm-run plugins`" if prefix else "docs/configuration.md"
    return f"'{key}' = {shown}: {err['msg']}.\nFix: set {key} to a valid value (see {where})."


def _model_error(err: dict[str, Any], prefix: str) -> str:
    """Two lines for an error of a model validator, which concerns several keys of the section
    ``prefix`` names (e.g. ``policy.options: hidden_size 130 is not divisible by num_heads 4``)."""
    section = prefix.rstrip(".") or "the config"
    reason = err.get("ctx", {}).get("error")
    message = str(reason) if reason is not None else err["msg"]
    where = "`pcm-run plugins`" if prefix else "docs/configuration.md"
    return f"{section}: {message.rstrip('.')}.\nFix: change the keys of {section} it names so they agree (see {where})."


def short_repr(value: Any) -> str:
    """``repr`` capped to about 80 characters, never expanding what a YAML alias repeats."""
    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = shown.maxlong = 80
    shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 6
    shown.maxlevel = 3
    return shown.repr(value)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys (it would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"duplicate key {short_repr(key)} at line {key_node.start_mark.line + 1}.\n"
                                  "Fix: write each key once (YAML would keep only the last)")
            if isinstance(key, typing.Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_size(data: Any, where: str) -> None:
    """Refuse a loaded document that expands to more than :data:`MAX_YAML_NODES` values (an alias
    bomb is a few hundred bytes that expand to billions); stops counting at the limit."""
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(f"{where} expands to more than {MAX_YAML_NODES} values (YAML aliases repeat them).\n"
                              "Fix: write the config out without aliases; configs are small")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def safe_yaml(text: str, where: str) -> Any:
    """Parse ``text`` as YAML with duplicate keys refused, a bounded size and no deep recursion."""
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"{where} nests too deeply to read.\nFix: configs are a few levels deep; check the file") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{where} holds a value YAML cannot read: {short_repr(str(exc))}.\nFix: correct that value") from None
    _check_size(data, where)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'pcm.budget=12'`` -> (``['pcm', 'budget']``, ``12``); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' has no '='.\nFix: write --set KEY=VALUE, e.g. --set pcm.budget=12")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key.\nFix: write --set KEY=VALUE, e.g. --set pcm.budget=12")
    try:
        value = safe_yaml(raw, f"override '{key}'") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML config file as a mapping, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist.\nFix: pass an existing file to --config (see configs/)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {exc.start}).\nFix: save it as UTF-8 YAML") from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read: {exc.strerror}.\nFix: check the path and its permissions") from None
    try:
        data = safe_yaml(text, f"config file '{path}'")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}.\nFix: correct the YAML syntax there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' holds a {type(data).__name__}, not a mapping.\nFix: write sections such as 'pcm:' at the top level")
    return data


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    env: str | None = None,
    policy: str | None = None,
) -> RunConfig:
    """Defaults <- YAML file <- ``--env``/``--policy`` <- ``--set`` overrides, validated."""
    data = read_yaml(path) if path is not None else {}
    if env is not None:
        _set_path(data, ["env", "name"], env)
    if policy is not None:
        _set_path(data, ["policy", "name"], policy)
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(data, keys, value)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    return config


def render_type(annotation: object, bar: str = " | ") -> str:
    """A field's type for people, the same in ``pcm-run plugins`` and docs/configuration.md:
    ``Literal['a', 'b']`` -> ``"a" | "b"``, ``str | None`` -> ``str | null``, ``dict[...]`` -> ``mapping``.
    ``bar`` separates alternatives (markdown tables escape it)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return bar.join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return bar.join(render_type(a, bar) for a in typing.get_args(annotation))
    if origin is dict or annotation is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def config_value(config: BaseModel, key: str) -> Any:
    """The value at the dotted ``key`` (``"pcm.proxy"``) of ``config``."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class ResolvedComponent:
    """A component name checked against the registry, with its validated options."""

    kind: str
    name: str
    cls: type
    options: BaseModel

    def build(self, **context: Any) -> Any:
        return self.cls(self.options, **context)


def resolve_components(config: RunConfig, registry: Any = None, check_installed: bool = True) -> dict[str, ResolvedComponent]:
    """Look up every component the config names and validate its options (nothing heavy is built)."""
    from pcm_core.registry import get_registry

    from pcm_core.interfaces import COMPONENT_KINDS

    registry = registry or get_registry()
    resolved = {}
    for component in COMPONENT_KINDS:
        kind, where = component.name, component.options_key
        name, options = config_value(config, component.key), config_value(config, where)
        registration = registry.get(kind, name)
        if check_installed:
            registration.check_installed()
        try:
            validated = registration.cls.Options.model_validate(options)
        except ValidationError as exc:
            raise ConfigError(
                format_validation_error(exc, prefix=f"{where}.", model=registration.cls.Options)
            ) from None
        resolved[kind] = ResolvedComponent(kind, name, registration.cls, validated)
    return resolved


def resolve_trackers(tracking: TrackingConfig, registry: Any = None) -> list[ResolvedComponent]:
    """The trackers of ``tracking.backends`` (none when tracking is off), checked against the
    registry and installed, with validated options."""
    from pcm_core.registry import get_registry

    if not tracking.enabled:
        return []
    registry = registry or get_registry()
    resolved = []
    for name in tracking.backends:
        registration = registry.get("tracker", name)
        registration.check_installed()
        try:
            options = registration.cls.Options.model_validate(tracking.options.get(name, {}))
        except ValidationError as exc:
            raise ConfigError(
                format_validation_error(exc, prefix=f"tracking.options.{name}.", model=registration.cls.Options)
            ) from None
        resolved.append(ResolvedComponent("tracker", name, registration.cls, options))
    return resolved
