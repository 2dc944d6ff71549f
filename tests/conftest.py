"""Shared fixtures: locations of ../shared and of the model directory, and decoded songs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("AUDIOLIME_SHARED", REPO.parent / "shared"))


def model_dir() -> Path:
    return Path(os.environ.get("AUDIOLIME_MODEL_DIR", REPO / "models"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "audio").is_dir():
        pytest.skip(f"shared test material not found at {path} (set AUDIOLIME_SHARED)")
    return path


@pytest.fixture(scope="session")
def models() -> Path:
    path = model_dir()
    if not (path / "spleeter" / "2stems" / "checkpoint").is_file():
        pytest.fail(f"models are not set up in {path}: run `make models` (or `audiolime setup`)")
    return path


@pytest.fixture(scope="session")
def karissa(shared: Path):
    from audiolime.audio import decode

    return decode(shared / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
