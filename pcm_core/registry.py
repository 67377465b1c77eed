"""Plugin discovery and component lookup.

Built-in plugins are imported as modules; third-party plugins are found through the entry-point
group ``pcm``. ``PCM_PLUGINS`` (comma-separated entry-point names, empty for none) restricts which
third-party plugins load. A plugin that fails to import is recorded as broken and the others load.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
from dataclasses import dataclass
from functools import lru_cache

import pluggy

from pcm_core import hookspecs
from pcm_core.errors import MissingBackendError, UnknownComponentError
from pcm_core.interfaces import KINDS, Component, Options
from pcm_core.presets import Preset

ENTRY_POINT_GROUP = "pcm"
PLUGINS_ENV_VAR = "PCM_PLUGINS"
DISTRIBUTION = "pcm-vla"

BUILTIN_PLUGINS = (
    "pcm_phases.plugin",
    "pcm_tabletop.plugin",
    "pcm_tinyvla.plugin",
    "pcm_openvla.plugin",
    "pcm_maniskill.plugin",
    "pcm_libero.plugin",
    "pcm_trackers.plugin",
)

KNOWN_BACKENDS = {
    ("env", "libero"): "libero",
    ("env", "maniskill"): "maniskill",
    ("policy", "openvla"): "openvla",
    ("policy", "openvla-oft"): "openvla",
}
"""Components this project ships behind an extra: (kind, name) -> extra. The built-in plugin
``pcm_<extra>.plugin`` registers them."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    cls: type[Component]
    plugin: str
    distribution: str

    def missing_modules(self) -> list[str]:
        """Modules in ``cls.requires`` that cannot be imported here."""
        return [m for m in self.cls.requires if importlib.util.find_spec(m.split(".")[0]) is None]

    def check_installed(self) -> None:
        missing = self.missing_modules()
        if missing:
            package = self.distribution if self.distribution != "?" else DISTRIBUTION
            target = f'"{package}[{self.cls.extra}]"' if self.cls.extra else package
            raise MissingBackendError(
                f"{self.kind} '{self.name}' is not installed: it needs {', '.join(missing)}.\n"
                f"Fix: pip install {target}"
            )


@dataclass(frozen=True)
class BrokenPlugin:
    plugin: str
    distribution: str
    error: str


class Registry:
    """Every registered component, by kind and name."""

    def __init__(self, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.broken: list[BrokenPlugin] = []
        self.duplicates: list[str] = []  # names registered twice (the first stays); `pcm-run plugins` lists them
        self._origin: dict[object, tuple[str, str]] = {}
        for module_name in BUILTIN_PLUGINS:
            self._load(module_name, module_name, DISTRIBUTION)
        if load_entry_points:
            self._load_entry_points()
        self._components = self._collect()
        self.presets = self._collect_presets()

    def _load(self, label: str, module_name: str, distribution: str) -> None:
        try:
            module = importlib.import_module(module_name)
            self.pm.register(module, name=label)
        except BaseException as exc:  # a broken plugin (even one calling sys.exit) must not take the others down
            _reraise_interrupt(exc)
            self.broken.append(BrokenPlugin(label, distribution, f"{type(exc).__name__}: {exc}"))
            return
        self._origin[module] = (label, distribution)

    def _load_entry_points(self) -> None:
        allowed = os.environ.get(PLUGINS_ENV_VAR)
        allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allowed_names is not None and ep.name not in allowed_names:
                continue
            distribution = ep.dist.name if ep.dist is not None else "?"
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
            except BaseException as exc:
                _reraise_interrupt(exc)
                self.broken.append(BrokenPlugin(ep.name, distribution, f"{type(exc).__name__}: {exc}"))
                continue
            self._origin[module] = (ep.name, distribution)

    def _collect(self) -> dict[str, dict[str, Registration]]:
        components: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        for kind, hook_name in ((k.name, k.hook) for k in KINDS.values()):
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                plugin, distribution = self._origin.get(impl.plugin, (impl.plugin_name, "?"))

                def register(name: str, cls: type, _kind=kind, _p=plugin, _d=distribution) -> None:
                    if not (isinstance(cls, type) and issubclass(cls, KINDS[_kind].base)):
                        raise TypeError(f"plugin {_p} registered {_kind} '{name}' that is not a {KINDS[_kind].base.__name__}")
                    options = getattr(cls, "Options", None)
                    if not (isinstance(options, type) and issubclass(options, Options)):
                        raise TypeError(f"plugin {_p} registered {_kind} '{name}' whose Options is not a subclass of "
                                        "pcm_core.interfaces.Options (a pydantic model)")
                    earlier = components[_kind].get(name)
                    if earlier is not None:
                        self.duplicates.append(_duplicate_message(earlier, _p))
                        logger.debug(self.duplicates[-1])
                        return
                    components[_kind][name] = Registration(_kind, name, cls, _p, _d)

                self._call(impl, register, plugin, distribution)
        return components

    def _collect_presets(self) -> dict[tuple[str, str], Preset]:
        """(env, policy) -> the first registered :class:`~pcm_core.presets.Preset` of the pair."""
        presets: dict[tuple[str, str], Preset] = {}
        for impl in self.pm.hook.pcm_register_presets.get_hookimpls():
            plugin, distribution = self._origin.get(impl.plugin, (impl.plugin_name, "?"))

            def register(preset: Preset, _p: str = plugin) -> None:
                if not isinstance(preset, Preset):
                    raise TypeError(f"plugin {_p} registered a preset that is not a pcm_core.presets.Preset")
                presets.setdefault((preset.env, preset.policy), preset)

            self._call(impl, register, plugin, distribution)
        return presets

    def _call(self, impl: pluggy.HookImpl, register: object, plugin: str, distribution: str) -> None:
        """One plugin's registration hook; whatever it raises (but Ctrl-C) marks that plugin broken."""
        try:
            impl.function(register=register)
        except BaseException as exc:
            _reraise_interrupt(exc)
            self.broken.append(BrokenPlugin(plugin, distribution, f"{type(exc).__name__}: {exc}"))

    def components(self, kind: str) -> dict[str, Registration]:
        return dict(sorted(self._components[kind].items()))

    def missing_backends(self) -> list[tuple[str, str, str]]:
        """Known (kind, name, extra) that no plugin registers or whose extra is not installed."""
        return [
            (k, n, e)
            for (k, n), e in KNOWN_BACKENDS.items()
            if n not in self._components[k] or self._components[k][n].missing_modules()
        ]

    def get(self, kind: str, name: str) -> Registration:
        """The registration of ``name``, or a one-line error naming the fix."""
        found = self._components[kind].get(name)
        if found is not None:
            return found
        extra = KNOWN_BACKENDS.get((kind, name))
        if extra is not None:
            broken = self._broken_plugin(f"pcm_{extra}.plugin")
            if broken is not None:
                raise MissingBackendError(
                    f"{kind} '{name}' cannot be loaded: plugin {broken.plugin} failed with {broken.error.splitlines()[0]}.\n"
                    f"Fix: correct that error (a missing module: pip install \"pcm-vla[{extra}]\")"
                )
            raise MissingBackendError(
                f"{kind} '{name}' is not installed.\nFix: pip install \"pcm-vla[{extra}]\""
            )
        names = sorted(self._components[kind])
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UnknownComponentError(
            f"unknown {kind} '{name}'.\nFix: {hint}installed {KINDS[kind].plural}: {', '.join(names) or 'none'}"
        )

    def _broken_plugin(self, plugin: str) -> BrokenPlugin | None:
        """The record of ``plugin`` if it failed to load or register, else None."""
        return next((broken for broken in self.broken if broken.plugin == plugin), None)

    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook


def _duplicate_message(earlier: Registration, plugin: str) -> str:
    """``plugin`` registers a name ``earlier`` already holds: the earlier registration stays."""
    return (f"plugin {plugin} registers {earlier.kind} '{earlier.name}', which plugin {earlier.plugin} already "
            f"registered; {earlier.plugin}'s is used. Fix: give one of them another name")


def _reraise_interrupt(exc: BaseException) -> None:
    """Ctrl-C while a plugin loads still stops the program; anything else only breaks that plugin."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry (plugins load once)."""
    return Registry()

