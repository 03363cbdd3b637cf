"""The ``train`` command line: its options, generated from ``TrainConfig``'s fields, and its handler.

``python -m celebalib train`` trains a recipe (chosen for the data and the machine, or named
with ``--recipe``), or with ``--config RUN/config.json`` the settings a saved run asked for;
flags given on top override single settings in either case. Building the parser imports
neither TensorFlow nor Keras; the handler imports :mod:`celebalib.train` once the arguments
are parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

from celebalib.errors import ConfigError
from celebalib.recipes import (CHECKPOINT_METRICS, RECIPES, Recipe, TrainConfig, choices, named_recipe, resolve_recipe,
                               saved_recipe)

# What an optional setting given as "none" parses to, so "--time-budget none" can clear a recipe's budget.
CLEARED = object()


def _optional(kind: type) -> Any:
    """An argparse type that also accepts "none" (as ``CLEARED``) for None."""
    def convert(text: str) -> Any:
        return CLEARED if text.lower() == "none" else kind(text)
    convert.__name__ = kind.__name__
    return convert


def _on_off(text: str) -> bool:
    """on/off (also true/false, yes/no, 1/0) as a bool."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: expected on or off")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per TrainConfig field (``--image-size`` for image_size); unset options stay None."""
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training settings (default: the recipe's; 'none' clears an optional one)")
    for field in dataclasses.fields(TrainConfig):
        kind, flag = hints[field.name], f"--{field.name.replace('_', '-')}"
        text = f"{field.metadata['help']} ({recipe_values(field.name)})"
        options: dict[str, Any] = {"default": None, "help": text, "dest": field.name}
        allowed = choices(field.name) if typing.get_origin(kind) is Literal else None
        if allowed:
            options["choices"] = allowed
        elif kind is bool:
            options.update(type=_on_off, metavar="{on,off}")
        elif field.name in ("weights", "identity_targets"):
            options["type"] = _optional(str)
        else:
            base = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
            options["type"] = _optional(base) if type(None) in typing.get_args(kind) else base
        group.add_argument(flag, **options)
    group.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                       help="the same as --augment none")


def _shown(value: Any) -> str:
    """A setting as the command line spells it: on/off for booleans, none for None."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def recipe_values(name: str) -> str:
    """What each recipe sets ``name`` to, for --help: "every recipe: 32" or "course 64, celeba-cpu 96, ..."."""
    values = {recipe: _shown(getattr(config, name)) for recipe, config in RECIPES.items()}
    if len(set(values.values())) == 1:
        return f"every recipe: {next(iter(values.values()))}"
    return ", ".join(f"{recipe} {value}" for recipe, value in values.items())


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line (those not None)."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return {name: None if value is CLEARED else value for name, value in given.items()}


def recipe_table() -> str:
    """One line per recipe with its settings that differ from TrainConfig's defaults, for --help."""
    return "\n".join(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in config.changes().items())
                     for name, config in RECIPES.items())


def recipe_of_run(path: str | Path, data_root: Path) -> Recipe:
    """The settings a saved run asked for, from its config.json (or its folder), as a recipe named after it.

    Fast mode and the environment's single overrides do not apply: the point is to train that run again.
    """
    from celebalib.runs import load_record, read_record

    path = Path(path).expanduser()
    record = read_record(path) if path.is_dir() else load_record(path)
    return saved_recipe(f"from {path}", record.settings, data_root)


def resolve_from_args(args: argparse.Namespace) -> tuple[Recipe, Path | None]:
    """The recipe a ``train`` command line asks for and its ``--data`` root (None: the settings' data):
    ``--config``'s saved settings, else ``--recipe``, else the one for the data and machine
    (``recipes.resolve_recipe``), then the flags given."""
    from celebalib.environment import read_environment

    env = read_environment()
    root = Path(args.data).expanduser() if args.data else env.data_root
    if args.data and not root.is_dir():
        raise ConfigError(f"data root {root} not found; expected a CelebA folder (or omit it for the synthetic set)")
    if getattr(args, "config", None):
        recipe = recipe_of_run(args.config, root)
    elif args.recipe:
        recipe = named_recipe(args.recipe, root, fast=env.fast)
    else:
        recipe = resolve_recipe(root, fast=env.fast)
    return recipe.with_changes(root, **given_settings(args)), (root if args.data else None)


def train_command(args: argparse.Namespace) -> int:
    """Train from the command line: print the recipe and its expected time, train, say where the run went."""
    from celebalib import train

    recipe, data_root = resolve_from_args(args)
    print(recipe.describe(), flush=True)
    run = train.fit(args.out, recipe.config, data_root=data_root, progress=False if args.quiet else "epochs")
    if run is None:
        print(f"worker finished; the chief worker wrote the run folder {args.out}")
        return 0
    monitor = CHECKPOINT_METRICS[run.train_config.checkpoint_metric]
    averaged = run.record.progress.averaged
    if averaged:
        first, last = averaged["epochs"]
        what, value = f"the weights of epochs {first}-{last} averaged, ", averaged[monitor]
    else:
        what, value = "", run.history()[monitor].max()
    print(f"run {run.run_id} -> {run.path} ({run.files.best.name}: {what}{monitor} {value:.3f})")
    return 0


def configure_train_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` arguments: data, output, recipe or saved config, and one option per TrainConfig field."""
    parser.epilog = ("example:\n  python -m celebalib train --data /path/to/celeba --out runs/celeba-cpu\n"
                     "  python -m celebalib train --config runs/celeba-cpu/config.json --out runs/again --seed 1\n\n"
                     "Without --recipe or --config, the recipe follows the data and the machine: course for the "
                     "synthetic faces, celeba-cpu or celeba-gpu for real CelebA; CELEBALIB_FAST=1 shrinks it. Recipes:\n"
                     + recipe_table())
    parser.add_argument("--data", help="CelebA root (default: CELEBA_ROOT, else the synthetic set)")
    parser.add_argument("--out", required=True, help="run folder to create, or to resume")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--recipe", "--preset", dest="recipe", choices=tuple(RECIPES),
                        help="named settings (default: the recipe for the data and machine); flags override it")
    chosen.add_argument("--config", metavar="RUN/config.json",
                        help="train with the settings a saved run asked for (its config.json or its folder), "
                             "as they are: no fast mode, no environment overrides; flags override them")
    parser.add_argument("--quiet", action="store_true", help="no line per epoch")
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)
    add_config_arguments(parser)
    parser.set_defaults(handler=train_command)
