"""Bad inputs generated from the config schema, and a driver that feeds each to ``pcm-run --dry-run``.

Every leaf of ``RunConfig`` and of the default components' ``Options`` gets values its type can
never accept (infinities and NaN for numbers, booleans and fractions for integers, mappings for
strings, an unknown choice for a ``Literal``...), each once through ``--set`` and once through a
YAML file. ``python fuzz_inputs.py FOLDER`` runs them all in this process and prints one JSON line
per input: its id, the exit code, stderr, and whether the 10-second alarm fired.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel

BAD_VALUES = {
    int: ["true", "1.5", "abc", ".inf", "[1]", "9" * 5000],
    float: [".inf", "-.inf", ".nan", "1.0e309", "true", "abc"],
    bool: ["maybe", "2", "[true]"],
    str: ["{a: 1}", "[1, 2]"],
    dict: ["5", "[1, 2]"],
    list: ["5", "{a: 1}"],
    "literal": ["zz_not_a_choice", "7"],
}
"""For each kind of leaf, YAML values it can never accept."""

PER_FIELD = 2
"""At most this many bad values per field and way in (``--set``, YAML), so every field gets its share."""


def leaf_kind(annotation: object) -> object | None:
    """The entry of :data:`BAD_VALUES` for a field's type; None for types not fuzzed (nested models)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "literal"
    if origin in (typing.Union, types.UnionType):
        kinds = {leaf_kind(arg) for arg in typing.get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is typing.Annotated:
        return leaf_kind(typing.get_args(annotation)[0])
    if origin in (dict, list, tuple):
        return {dict: dict, list: list, tuple: list}[origin]
    if annotation in (int, float, bool, str, dict, list):
        return annotation
    return None


def fields_of(model: type[BaseModel], prefix: str) -> list[tuple[str, object]]:
    """``(dotted key, kind)`` of every fuzzable leaf of ``model``, nested sections included."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += fields_of(annotation, f"{prefix}{name}.")
            continue
        kind = leaf_kind(annotation)
        if kind is not None:
            found.append((f"{prefix}{name}", kind))
    return found


def yaml_document(key: str, value: str) -> str:
    """``a.b.c`` and ``v`` -> the nested YAML mapping setting it."""
    parts = key.split(".")
    text = ""
    for depth, part in enumerate(parts[:-1]):
        text += "  " * depth + f"{part}:\n"
    return text + "  " * (len(parts) - 1) + f"{parts[-1]}: {value}\n"


def cases(folder: Path) -> list[tuple[str, list[str], str]]:
    """``(id, argv, key)`` for every bad input; YAML inputs are written into ``folder``."""
    from pcm_core.config import RunConfig, resolve_components

    config = RunConfig()
    keys = fields_of(RunConfig, "")
    for kind, resolved in resolve_components(config).items():
        where = {"env": "env.options.", "policy": "policy.options."}.get(kind, f"pcm.{kind}_options.")
        keys += fields_of(resolved.cls.Options, where)
    found = []
    for key, kind in keys:
        for n, value in enumerate(BAD_VALUES[kind][:PER_FIELD]):
            found.append((f"set:{key}={value[:20]}", ["--set", f"{key}={value}"], key))
            path = folder / f"{key}-{n}.yaml"
            path.write_text(yaml_document(key, value))
            found.append((f"yaml:{key}={value[:20]}", ["--config", str(path)], key))
    return found


def run_all(folder: Path) -> None:
    from pcm_core.cli import main

    def alarm(signum, frame):
        raise TimeoutError("no answer within 10 s")

    signal.signal(signal.SIGALRM, alarm)
    for case_id, argv, key in cases(folder):
        err, out, code, hung = io.StringIO(), io.StringIO(), None, False
        signal.alarm(10)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                import pcm_core.cli as cli

                cli.err.file, cli.out.file = err, out
                main(["--dry-run", *argv])
            code = 0
        except SystemExit as exc:
            code = exc.code
        except TimeoutError:
            hung = True
        except BaseException as exc:  # noqa: BLE001 - a traceback is what the test reports
            err.write(f"Traceback: {type(exc).__name__}: {exc}"[:500])
            code = -1
        finally:
            signal.alarm(0)
        print(json.dumps({"id": case_id, "key": key, "code": code, "stderr": err.getvalue()[:2000], "hung": hung}), flush=True)


if __name__ == "__main__":
    run_all(Path(sys.argv[1]))
