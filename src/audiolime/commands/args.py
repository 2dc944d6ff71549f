"""Argument helpers shared by the sub-commands (parsing only: bounds live in the request model)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def positive_int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer flag within ``[lo, hi]`` (for flags that are not request fields)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}" if hi else f"must be >= {lo}")
        return value

    return parse


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def add_model_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=None,
                   help="models directory (default: $AUDIOLIME_MODEL_DIR or ./models of the checkout)")
