"""The study's hyperparameter search space, defined once.

`mammosynth.tune` (Optuna) and `mammosynth.cluster.katib` (Katib Experiments) both read it, and the
trainer's hyperparameter flags (``python -m mammosynth.train --dense-units ...``) are generated from
it, so a parameter added here is searchable locally, in the cluster and settable on the CLI.
This module imports nothing from the rest of the package.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One hyperparameter: ``kind`` ∈ {int, double, categorical}; ``flag`` is its train CLI flag."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    log: bool = False
    help: str = ""

    @property
    def flag(self) -> str:
        """The trainer's command-line flag for this parameter (kebab-case)."""
        return "--" + self.name.replace("_", "-")

    @property
    def python_type(self) -> type:
        """The Python type a value of this parameter has (int, float, or the choices' type)."""
        if self.kind == "int":
            return int
        if self.kind == "double":
            return float
        return type(self.choices[0])

    def cast(self, value: Any) -> Any:
        """Parse a value (Katib hands back strings) into this parameter's Python type.

        Args:
            value: the value, a string or already typed.

        Returns:
            The typed value.

        Raises:
            ValueError: a categorical value that is not one of the choices.
        """
        if self.kind == "int":
            return int(float(value))
        if self.kind == "double":
            return float(value)
        for choice in self.choices:
            if str(choice) == str(value):
                return choice
        raise ValueError(f"parameter {self.name}: {value!r} is not one of {list(self.choices)}")


# The study's Optuna space for its tuned CNN: number of conv blocks, filters (first block, doubled per
# block), dense units, dropout, learning rate.
SEARCH_SPACE: tuple[Param, ...] = (
    Param("n_conv_layers", "int", 2, 4, help="tuned_cnn: conv blocks"),
    Param("filters", "categorical", choices=(16, 32, 64), help="tuned_cnn: filters of the first block"),
    Param("dense_units", "categorical", choices=(64, 128, 256), help="hidden dense units"),
    Param("dropout", "double", 0.1, 0.5, help="dropout before the output unit"),
    Param("learning_rate", "double", 1e-4, 1e-2, log=True, help="Adam learning rate"),
)

# Which parameters each classifier builder takes; the architecture knobs only exist for tuned_cnn.
MODEL_PARAMS: dict[str, tuple[str, ...] | None] = {"tuned_cnn": None}  # None = all
DEFAULT_PARAMS: tuple[str, ...] = ("dense_units", "dropout", "learning_rate")

# Hyperparameters the trainer always has a value for (train_classifier's own defaults).
TRAIN_DEFAULTS: dict[str, Any] = {"learning_rate": 1e-3, "dropout": 0.3}


def space_for(model: str, space: tuple[Param, ...] = SEARCH_SPACE) -> tuple[Param, ...]:
    """The part of ``space`` that ``model``'s builder accepts.

    Args:
        model: classifier builder name.
        space: the space to filter (default: the study's).

    Returns:
        The parameters ``model`` takes (all of them for ``tuned_cnn``).
    """
    names = MODEL_PARAMS.get(model, DEFAULT_PARAMS)
    return tuple(p for p in space if names is None or p.name in names)


def add_flags(parser: argparse.ArgumentParser, space: tuple[Param, ...] = SEARCH_SPACE) -> None:
    """Add one typed flag per parameter of ``space`` to ``parser``.

    Args:
        parser: the trainer's argument parser.
        space: the parameters to add (default: the study's space).
    """
    for p in space:
        kwargs: dict[str, Any] = {
            "type": p.python_type,
            "default": TRAIN_DEFAULTS.get(p.name),
            "help": p.help,
        }
        parser.add_argument(p.flag, **kwargs)
