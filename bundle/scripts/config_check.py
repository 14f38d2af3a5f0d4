"""Command-line overrides checked against the workflow's configs before anything runs.

``python -m monai.bundle run ... --output_dri OUT`` would otherwise add a new, unused key ``output_dri`` and run with
the default output folder: a misspelt override is silently ignored. :func:`refuse_unknown_overrides` (the configs'
``initialize`` step) fails at start instead, naming the key and the nearest existing ones.

An override ``--a#b#c`` is known when the path exists in the configs named by ``--config_file``, or when its last part
is a keyword argument that a component (a mapping with ``_target_``) takes, e.g. ``--load_subject#centre_shift_px``.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import pydoc
import sys
from pathlib import Path
from typing import Any, Sequence

from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

#: Arguments of ``monai.bundle run`` itself, not config keys.
RUN_ARGUMENTS = frozenset(
    {"config_file", "meta_file", "logging_file", "tracking", "args_file", "run_id", "init_id", "final_id"}
)


def override_keys(argv: Sequence[str]) -> list[str]:
    """The ``--key`` (or ``--key=value``) names of a command line, in order."""
    return [token[2:].split("=", 1)[0] for token in argv if token.startswith("--") and len(token) > 2]


def config_files(argv: Sequence[str]) -> list[str]:
    """The files of ``--config_file`` on a command line (a path, or a Python list of paths)."""
    for index, token in enumerate(argv):
        value = None
        if token == "--config_file" and index + 1 < len(argv):
            value = argv[index + 1]
        elif token.startswith("--config_file="):
            value = token.split("=", 1)[1]
        if value is not None:
            parsed = ast.literal_eval(value) if value.lstrip().startswith(("[", "(")) else value
            return [parsed] if isinstance(parsed, str) else list(parsed)
    return []


def component_parameters(target: str) -> dict[str, inspect.Parameter] | None:
    """The parameters of the component ``target`` (a dotted path, or a MONAI name such as ``Compose``); None when it
    cannot be found or its signature cannot be read."""
    component = pydoc.locate(target) if "." in target else None
    if component is None:
        module = ComponentLocator().get_component_module_name(target)
        component = pydoc.locate(f"{module if isinstance(module, str) else ''}.{target}") if module else None
    try:
        return dict(inspect.signature(component).parameters) if component is not None else None
    except (TypeError, ValueError):
        return None


def unknown_part(config: Any, key: str) -> tuple[str, list[str]] | None:
    """None if the override ``key`` (``a#b#c``) is known in ``config``; else the path up to its first unknown part
    and the existing keys at that level."""
    node = config
    parts = key.split("#")
    for depth, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and "_target_" in node and depth == len(parts) - 1:
            # a further keyword argument of the component, if it takes that keyword (or any)
            parameters = component_parameters(str(node["_target_"]))
            if parameters is None or part in parameters:
                return None
            if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                return None
            return key, list(dict.fromkeys([*map(str, node), *parameters]))
        else:
            siblings = [str(k) for k in node] if isinstance(node, dict) else []
            return "#".join(parts[: depth + 1]), siblings
    return None


def override_values(argv: Sequence[str]) -> dict[str, str]:
    """``{key: value}`` of the ``--key value`` and ``--key=value`` overrides of a command line, quotes stripped."""
    values = {}
    for index, token in enumerate(argv):
        if not token.startswith("--") or len(token) <= 2:
            continue
        key, equals, value = token[2:].partition("=")
        if not equals and index + 1 < len(argv):
            value = argv[index + 1]
        values[key] = value.strip("\"'")
    return values


def choice_problems(argv: Sequence[str]) -> list[str]:
    """One line per override of an option with a fixed set of values (``preset``, ``precision``, ``label_map``)
    whose value is not among them: such a value would otherwise fail deep inside the first component using it."""
    from scripts.labels import LABEL_MAPS
    from scripts.presets import PRESETS

    choices = {"preset": sorted(PRESETS), "precision": ["auto", "fp32"], "label_map": sorted(LABEL_MAPS)}
    return [
        f"--{key} {value!r} is not one of {', '.join(choices[key])}"
        for key, value in override_values(argv).items()
        if key in choices and value not in choices[key]
    ]


def tracking_keys(tracking: str) -> dict[str, Any]:
    """The top-level config items that ``monai.bundle run --tracking TRACKING`` adds where the configs lack them
    (``tracking_uri``, ``experiment_name``, ``run_name``, ...; ``ConfigWorkflow.patch_bundle_tracking``): MONAI's
    settings of that name (``mlflow``) or those of the settings file ``tracking`` names."""
    settings = DEFAULT_EXP_MGMT_SETTINGS.get(tracking) or ConfigParser.load_config_files(tracking)
    handlers = settings.get("handlers_id", {})
    return {key: value for key, value in settings.get("configs", {}).items() if key not in handlers}


def refuse_unknown_overrides(argv: Sequence[str] | None = None) -> None:
    """Raise ``SystemExit`` with one line per override of ``argv`` (default: this process's command line) that no
    config named by its ``--config_file`` defines (nor ``--tracking``, see :func:`tracking_keys`), with the nearest
    existing keys, and per value outside its option's fixed choices (:func:`choice_problems`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    files = config_files(argv)
    if not files:
        return
    config = ConfigParser.load_config_files([str(Path(f)) for f in files])
    tracking = override_values(argv).get("tracking")
    if tracking:
        config = {**tracking_keys(tracking), **config}
    problems = []
    for key in override_keys(argv):
        if key in RUN_ARGUMENTS or key.startswith("_meta_"):
            continue
        unknown = unknown_part(config, key)
        if unknown is None:
            continue
        path, siblings = unknown
        close = difflib.get_close_matches(path.split("#")[-1], siblings, n=3, cutoff=0.6)
        hint = (
            f"; did you mean {', '.join('--' + '#'.join(path.split('#')[:-1] + [c]) for c in close)}?" if close else ""
        )
        problems.append(f"unknown override --{key}: {path!r} is not a key of {', '.join(files)}{hint}")
    problems += choice_problems(argv)
    if problems:
        raise SystemExit("\n".join(problems))
