"""Crop cache, held-out split, SyncNet pairs, UNet samples (synctalk.data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers_training import FACE_BOX, copy_dataset, write_dataset
from synctalk import data as D
from synctalk.errors import SyncTalkError
from synctalk.layout import dataset_layout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("src"), "src", n_frames=12)


@pytest.fixture
def layout(source: Path, tmp_path: Path):
    copy_dataset(source, tmp_path, "p")
    return dataset_layout(tmp_path, "p")


def test_crop_cache_holds_each_frames_crop(layout) -> None:
    from synctalk.faces.crop import crop_frame

    path = D.build_crop_cache(layout, progress=False)
    assert path == layout.crop_cache
    cache = D.load_crop_cache(layout)
    assert cache.shape == (12, 328, 328, 3) and cache.dtype == np.uint8
    assert isinstance(cache, np.memmap)
    for i in (0, 7, 11):
        want = crop_frame(cv2.imread(str(layout.frame_path(i))), FACE_BOX, 328)
        np.testing.assert_array_equal(cache[i], want)
    assert not list(layout.root.glob(".*.tmp"))


def test_a_failed_crop_cache_build_leaves_no_file(layout, monkeypatch: pytest.MonkeyPatch) -> None:
    import synctalk.faces.crop as crop_mod

    real = crop_mod.crop_frame
    calls = {"n": 0}

    def dies_halfway(img, box, size=328):
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt  # stands in for a kill in the middle of the build
        return real(img, box, size)

    monkeypatch.setattr(crop_mod, "crop_frame", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        D.build_crop_cache(layout, progress=False, workers=1)
    assert not layout.crop_cache.exists()
    assert not list(layout.root.glob(".*.tmp"))
    monkeypatch.setattr(crop_mod, "crop_frame", real)
    assert D.load_crop_cache(layout, progress=False).shape[0] == 12  # built on demand


def test_crop_cache_is_rebuilt_when_the_boxes_change(layout) -> None:
    import os

    D.build_crop_cache(layout, progress=False)
    before = layout.crop_cache.stat().st_mtime_ns
    cache = D.load_crop_cache(layout)
    assert layout.crop_cache.stat().st_mtime_ns == before  # current: not rebuilt
    del cache
    boxes = np.load(layout.crop_boxes)
    boxes[:, :2] += 10
    np.save(layout.crop_boxes, boxes)
    later = layout.crop_cache.stat().st_mtime + 5
    os.utime(layout.crop_boxes, (later, later))
    D.load_crop_cache(layout, progress=False)
    assert layout.crop_cache.stat().st_mtime_ns != before


def test_split_is_a_contiguous_held_out_tail() -> None:
    train, val = D.split_indices(100, 0.1)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))
    train, val = D.split_indices(12, 0.05)
    assert len(val) == 1 and val[0] == 11 and len(train) == 11
    train, val = D.split_indices(10, 0.0)
    assert len(val) == 0 and len(train) == 10
    with pytest.raises(SyncTalkError):
        D.split_indices(2, 0.5)
    with pytest.raises(SyncTalkError):
        D.split_indices(100, 1.0)


def test_syncnet_pairs_are_balanced_and_negatives_off_sync() -> None:
    frames = torch.arange(60)
    g = torch.Generator().manual_seed(1)
    face, audio, label = D.syncnet_pairs(frames, frames, g)
    assert sorted(face.tolist()) == list(range(60))  # every frame once per epoch
    pos, neg = label == 1, label == 0
    assert int(pos.sum()) == int(neg.sum()) == 30
    for start in range(0, 60, 8):  # every batch balanced too
        assert abs(int(label[start:start + 8].sum()) * 2 - len(label[start:start + 8])) <= 1
    assert torch.equal(face[pos], audio[pos])
    assert bool(((face[neg] - audio[neg]).abs() >= 5).all())
    assert set(audio.tolist()) <= set(range(60))
    face2, audio2, label2 = D.syncnet_pairs(frames, frames, g)  # drawn anew each epoch
    neg_pairs = {(int(f), int(a)) for f, a in zip(face[neg], audio[neg])}
    neg_pairs2 = {(int(f), int(a)) for f, a in zip(face2[label2 == 0], audio2[label2 == 0])}
    assert neg_pairs != neg_pairs2


def test_negatives_come_from_the_pool_and_tiny_pools_fail_clearly() -> None:
    g = torch.Generator().manual_seed(0)
    pool = torch.arange(11)  # just enough: every frame has a partner 5 away
    far = D.far_indices(pool, pool, g)
    assert bool(((far - pool).abs() >= 5).all())
    with pytest.raises(SyncTalkError, match="too few frames"):
        D.far_indices(torch.arange(6), torch.arange(6), g)


def test_reference_is_another_training_frame() -> None:
    g = torch.Generator().manual_seed(0)
    pool = torch.arange(5)
    idx = torch.arange(5).repeat(40)
    ref = D.reference_indices(idx, pool, g)
    assert bool((ref != idx).all())
    assert set(ref.tolist()) <= set(range(5))


def test_default_mask_is_the_reference_rectangle() -> None:
    img = np.full((320, 320, 3), 255, np.uint8)
    cv2.rectangle(img, (5, 5, 310, 305), (0, 0, 0), -1)
    x0, y0, x1, y1 = D.DEFAULT_MASK
    want = np.ones((320, 320), bool)
    want[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(img[..., 0] > 0, want)
    assert D.parse_mask("10,20,300,200") == (10, 20, 300, 200)
    with pytest.raises(SyncTalkError):
        D.parse_mask("10,20,5,200")
    with pytest.raises(SyncTalkError):
        D.parse_mask("a,b")


def test_unet_batch_on_the_memmap_and_on_the_device_agree(layout) -> None:
    from synctalk.audio.registry import get_spec

    feats = D.load_features(layout, "mel")
    crops = D.load_crop_cache(layout, progress=False)
    host = D.FrameData(crops, feats, "mel", on_device=False)
    dev = D.FrameData(torch.from_numpy(np.array(crops)), feats, "mel", on_device=True, channels_last=True)
    idx, ref = torch.tensor([3, 0, 11]), torch.tensor([5, 9, 1])
    mask = (20, 30, 300, 310)
    a = host.unet_batch(idx, ref, mask)
    b = dev.unet_batch(idx, ref, mask)
    for x, y in ((a.img6, b.img6), (a.target, b.target), (a.audio, b.audio)):
        torch.testing.assert_close(x, y)
    assert b.img6.is_contiguous(memory_format=torch.channels_last)
    assert a.img6.shape == (3, 6, 320, 320) and a.target.shape == (3, 3, 320, 320)
    want_target = torch.from_numpy(np.array(crops[3, 4:324, 4:324])).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(a.target[0], want_target)
    torch.testing.assert_close(a.img6[0, :3], host.faces(torch.tensor([5]))[0])  # reference first
    masked = a.img6[:, 3:]
    assert float(masked[:, :, 30:310, 20:300].abs().max()) == 0.0
    keep = torch.ones(320, 320, dtype=torch.bool)
    keep[30:310, 20:300] = False
    torch.testing.assert_close(masked[:, :, keep], a.target[:, :, keep])
    spec = get_spec("mel")
    np.testing.assert_allclose(a.audio[2].numpy(), spec.window_tensor(feats, 11))  # zero-padded at the end


def test_missing_features_name_the_command_that_makes_them(layout) -> None:
    with pytest.raises(SyncTalkError, match="--asr_model ave"):
        D.load_features(layout, "ave")
    assert D.resolve_asr(layout, None) == "mel"
