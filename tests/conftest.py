"""Shared test fixtures: real media from ../shared, tiny work folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SYNCTALK_SHARED", REPO.parent / "shared"))
VIDEOS = SHARED / "fixtures" / "video"
SPEECH_WAV = SHARED / "fixtures" / "audio_talk_hb.wav"
MODELS = SHARED / "models"

# keep torch and BLAS from oversubscribing CI's two cores
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a longer end-to-end test")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared fixtures not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def models_dir(shared_dir: Path) -> Path:
    return MODELS
