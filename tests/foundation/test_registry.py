"""Plugin discovery: `pcm-run plugins`, broken third-party plugins, PCM_PLUGINS, lookups with hints."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from pcm_core import cli, registry as registry_module
from pcm_core.errors import MissingBackendError, UnknownComponentError
from pcm_core.interfaces import KINDS, PhaseSegmenter
from pcm_core.registry import Registry, get_registry

PCM_RUN = str(Path(sys.executable).with_name("pcm-run"))

# kind -> table title in `pcm-run plugins`, and built-in names each table must show
BUILTINS = {
    "env": ("envs", ["tabletop"]),
    "policy": ("policies", ["tinyvla"]),
    "segmenter": ("phase segmenters", ["gripper", "progress", "env"]),
    "proxy": ("variance proxies", ["success_failure", "uniform", "entropy"]),
    "sampler": ("budget samplers", ["pcm", "uniform", "all", "topk"]),
    "tracker": ("trackers", ["mlflow", "tensorboard", "wandb"]),
}


def _sections(output: str) -> dict[str, str]:
    """Split `pcm-run plugins` output into the text under each table title."""
    titles = [title for title, _ in BUILTINS.values()]
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() in titles]
    assert [lines[i].strip() for i in starts] == titles, output
    bounds = starts[1:] + [len(lines)]
    return {lines[s].strip(): "\n".join(lines[s:e]) for s, e in zip(starts, bounds)}


def _rows(section: str) -> dict[str, str]:
    """First cell -> whole row of a rich table (rows are lines starting with '│ name')."""
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if line.startswith("│") and cells[0]:
            rows[cells[0]] = line
    return rows


def test_plugins_lists_every_kind(monkeypatch, capsys):
    monkeypatch.setattr(cli, "out", Console(width=250))
    cli.main(["plugins"])
    sections = _sections(capsys.readouterr().out)
    registry = get_registry()
    for kind, (title, names) in BUILTINS.items():
        rows = _rows(sections[title])
        assert set(names) <= set(rows), (title, sorted(rows))
        assert set(rows) - {"name"} == set(registry.components(kind)), title
        for name in names:
            assert rows[name].rstrip("│ ").endswith("pcm-vla"), rows[name]


def test_plugins_shows_options_with_defaults(monkeypatch, capsys):
    monkeypatch.setattr(cli, "out", Console(width=250))
    cli.main(["plugins"])
    sections = _sections(capsys.readouterr().out)
    assert "num_phases: int = 4" in _rows(sections["phase segmenters"])["gripper"]
    # a Literal option shows its values, as docs/configuration.md does
    assert 'gripper: "raw" | "libero" = \'raw\'' in sections["policies"]
    # an env that names its phase labels lists them
    assert "phase labels: 0 approach, 1 align + grasp" in sections["envs"]


def test_plugins_lists_known_missing_backends(monkeypatch, capsys):
    """Whatever is installed here: backends whose modules are missing are listed with their extra,
    installed ones are not."""
    monkeypatch.setattr(cli, "out", Console(width=250))
    components = get_registry().components
    for kind, name in (("env", "libero"), ("env", "maniskill"), ("policy", "openvla")):
        monkeypatch.setattr(components(kind)[name].cls, "requires", ("pcm_absent_module_xyz",))
    monkeypatch.setattr(components("policy")["openvla-oft"].cls, "requires", ())  # as if installed
    cli.main(["plugins"])
    out = capsys.readouterr().out
    missing = out.split("known backends not installed", 1)[1]
    lines = [line.strip() for line in missing.splitlines() if line.strip()]
    assert lines[:3] == ['env libero: pip install "pcm-vla[libero]"', 'env maniskill: pip install "pcm-vla[maniskill]"',
                         'policy openvla: pip install "pcm-vla[openvla]"']
    assert "openvla-oft:" not in missing


def test_builtins_load_without_errors():
    registry = get_registry()
    assert registry.broken == []
    for kind, (_, names) in BUILTINS.items():
        assert set(names) <= set(registry.components(kind)), kind


@pytest.mark.parametrize(
    "kind, name, expected",
    [
        ("segmenter", "griper", "did you mean 'gripper'?"),
        ("sampler", "top_k", "did you mean 'topk'?"),
        ("proxy", "entropi", "did you mean 'entropy'?"),
        ("env", "tabeltop", "did you mean 'tabletop'?"),
        ("policy", "tinyvlaa", "did you mean 'tinyvla'?"),
        ("sampler", "qqqq", "installed budget samplers: all, "),
    ],
)
def test_unknown_name_suggests(kind, name, expected):
    with pytest.raises(UnknownComponentError) as info:
        get_registry().get(kind, name)
    message = str(info.value)
    assert message.startswith(f"unknown {kind} '{name}'.\nFix: ")
    assert expected in message
    assert len(message.splitlines()) == 2


def test_known_missing_backend_names_the_extra(monkeypatch):
    monkeypatch.setitem(registry_module.KNOWN_BACKENDS, ("env", "zz_sim"), "zz")
    with pytest.raises(MissingBackendError, match=r'env \'zz_sim\' is not installed.\nFix: pip install "pcm-vla\[zz\]"'):
        get_registry().get("env", "zz_sim")


@pytest.mark.skipif(importlib.util.find_spec("libero") is not None, reason="the [libero] extra is installed")
def test_registered_backend_without_its_extra_names_the_extra():
    registration = get_registry().get("env", "libero")
    assert ("env", "libero", "libero") in get_registry().missing_backends()
    with pytest.raises(MissingBackendError, match=r'env \'libero\' is not installed: it needs libero, .*\nFix: pip install "pcm-vla\[libero\]"'):
        registration.check_installed()


# --- third-party plugins loaded as extra modules -------------------------------------------------

PLUGIN_SOURCE = '''
import pcm_core
from pcm_core.interfaces import PhaseSegmenter


class Heavy(PhaseSegmenter):
    requires = ("surely_not_installed_pkg_xyz",)
    extra = "libero"
    num_phases = 1

    def segment(self, batch):
        raise NotImplementedError


@pcm_core.hookimpl
def pcm_register_segmenters(register):
    register("heavy", Heavy)


@pcm_core.hookimpl
def pcm_register_budget_samplers(register):
    register("not_a_sampler", int)
'''


def test_plugin_errors_are_isolated(tmp_path, monkeypatch):
    (tmp_path / "pcm_test_thirdparty.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "BUILTIN_PLUGINS", registry_module.BUILTIN_PLUGINS + ("pcm_test_thirdparty", "pcm_missing_module_xyz"))
    registry = Registry(load_entry_points=False)

    broken = {b.plugin: b.error for b in registry.broken}
    assert broken["pcm_test_thirdparty"] == "TypeError: plugin pcm_test_thirdparty registered sampler 'not_a_sampler' that is not a BudgetSampler"
    assert broken["pcm_missing_module_xyz"].startswith("ModuleNotFoundError: No module named 'pcm_missing_module_xyz'")
    assert "heavy" in registry.components("segmenter")  # its other hook still registered
    assert "gripper" in registry.components("segmenter") and "pcm" in registry.components("sampler")

    heavy = registry.get("segmenter", "heavy")
    assert issubclass(heavy.cls, PhaseSegmenter)
    assert heavy.missing_modules() == ["surely_not_installed_pkg_xyz"]
    with pytest.raises(MissingBackendError, match=r'needs surely_not_installed_pkg_xyz.*\nFix: pip install "pcm-vla\[libero\]"'):
        heavy.check_installed()


# --- a broken third-party distribution found through entry points ------------------------------


@pytest.fixture
def broken_distribution(tmp_path):
    dist_info = tmp_path / "fake_broken-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-broken\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[pcm]\nfake_broken = fake_broken_plugin\n")
    (tmp_path / "fake_broken_plugin.py").write_text(textwrap.dedent("""
        raise RuntimeError("fake plugin exploded on import")
    """))
    return tmp_path


def _run_plugins(path: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PCM_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["COLUMNS"] = "250"
    env.update(extra_env)
    return subprocess.run([PCM_RUN, "plugins"], capture_output=True, text=True, env=env, timeout=120)


def test_broken_distribution_is_reported_not_fatal(broken_distribution):
    proc = _run_plugins(broken_distribution)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "fake_broken (fake-broken): BROKEN — RuntimeError: fake plugin exploded on import" in proc.stdout
    sections = _sections(proc.stdout.split("broken plugins")[0])
    for kind, (title, names) in BUILTINS.items():
        assert set(names) <= set(_rows(sections[title])), title


@pytest.mark.parametrize("allowed", ["", "some_other_plugin", " , "])
def test_pcm_plugins_env_var_excludes_it(broken_distribution, allowed):
    proc = _run_plugins(broken_distribution, PCM_PLUGINS=allowed)
    assert proc.returncode == 0, proc.stderr
    assert "fake_broken" not in proc.stdout
    assert "BROKEN" not in proc.stdout
    assert "tabletop" in proc.stdout  # built-ins load regardless


def test_pcm_plugins_env_var_selects_it(broken_distribution):
    proc = _run_plugins(broken_distribution, PCM_PLUGINS="other, fake_broken")
    assert proc.returncode == 0, proc.stderr
    assert "fake_broken (fake-broken): BROKEN" in proc.stdout


def test_every_kind_has_its_hookspec_and_config_keys():
    """The one table of component kinds names a real hookspec and real config keys for each kind."""
    from pcm_core import hookspecs
    from pcm_core.config import RunConfig, config_value

    config = RunConfig()
    assert list(KINDS) == ["env", "policy", "segmenter", "proxy", "sampler", "tracker"]
    for kind in KINDS.values():
        assert callable(getattr(hookspecs, kind.hook))
        name, options = config_value(config, kind.key), config_value(config, kind.options_key)
        if kind.name == "tracker":  # a run names a list of trackers, options by tracker name
            assert name == ["mlflow"] and options == {}
        else:
            assert isinstance(name, str) and isinstance(options, dict)
    assert KINDS["proxy"].plural == "variance proxies"  # one name for people, in the CLI and in errors
