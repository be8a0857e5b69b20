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


# ---------------------------------------------------------------- training tests (test_training, test_distributed)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-frame person (helpers_training), written once per test module and copied by the tests."""
    from helpers_training import N_FRAMES, write_dataset

    return write_dataset(tmp_path_factory.mktemp("src"), "src", n_frames=N_FRAMES)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty dataset/ folder (and room for checkpoint/) for one test."""
    (tmp_path / "dataset").mkdir()
    return tmp_path


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """One torch thread: tiny CPU runs gain little from a second one and lose much when the cores are
    shared (two ranks, or other work)."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
