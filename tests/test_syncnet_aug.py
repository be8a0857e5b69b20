"""SyncNet against memorising a short video: what it looks at, hard negatives, batched augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from synctalk import data as D
from synctalk.errors import SyncTalkError
from unet_328 import SyncNet


def _mel(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, 80, 64, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- what the critic sees


def test_face_encoder_sees_the_mouth_band_only() -> None:
    torch.manual_seed(0)
    net = SyncNet("mel", "tiny").train()  # batch statistics: an untrained eval-mode net maps all inputs alike
    band = net.face_band(320)
    assert (band.start, band.stop) == (64, 224)  # the mouth (rows ~70-190 of the crop) and the jaw
    face = torch.rand(2, 3, 320, 320)
    with torch.no_grad():
        ref = net.encode_face(face)
        outside = face.clone()
        outside[:, :, :64] = torch.rand(2, 3, 64, 320)
        outside[:, :, 224:] = torch.rand(2, 3, 96, 320)
        torch.testing.assert_close(net.encode_face(outside), ref)
        mouth = face.clone()
        mouth[:, :, 100:140] = 0.0  # a dark open mouth
        assert (net.encode_face(mouth) - ref).abs().max() > 1e-3
    with pytest.raises(SyncTalkError):
        SyncNet("mel", "tiny", face_rows=(0.7, 0.2))


def test_mel_audio_encoder_sees_the_steps_around_its_frame() -> None:
    torch.manual_seed(0)
    net = SyncNet("mel", "tiny").train()
    s = net.audio_slice
    # frame i's own mel steps are 32..35 of the 64 (8 frames of 4 before it): the slice is centred there
    assert s.stop - s.start == 24 and s.start <= 32 and s.stop >= 36 and (s.start + s.stop) / 2 == 34
    audio = _mel(2)
    with torch.no_grad():
        ref = net.encode_audio(audio)
        far = audio.clone()
        far[..., : s.start] = torch.randn(2, 1, 80, s.start)
        far[..., s.stop:] = torch.randn(2, 1, 80, 64 - s.stop)
        torch.testing.assert_close(net.encode_audio(far), ref)
        near = audio.clone()
        near[..., 32:36] += 3.0
        assert (net.encode_audio(near) - ref).abs().max() > 1e-3
    assert SyncNet("mel", "tiny", audio_context=0).audio_slice is None  # the whole window
    assert SyncNet("ave", "tiny").audio_slice is None  # reshaped features keep their whole window


def test_multi_frame_face_input_and_stacks_that_stay_in_their_range() -> None:
    net = SyncNet("mel", "tiny", face_frames=5).eval()
    assert net.config["face_frames"] == 5
    with torch.no_grad():
        a, f = net(torch.rand(2, 15, 320, 320), _mel(2))
    assert f.shape == (2, 512)
    with pytest.raises(SyncTalkError, match="15"):
        net.encode_face(torch.rand(2, 3, 320, 320))
    with pytest.raises(SyncTalkError):
        SyncNet("mel", "tiny", face_frames=4)

    n = 12
    crops = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 328, 328, 3).contiguous()
    data = D.FrameData(crops, torch.zeros(n, 4, 80).numpy(), "mel")
    stack = data.face_stack(torch.tensor([0, 5, 9]), 5, lo=0, hi=9)
    assert stack.shape == (3, 15, 320, 320)
    frame_of = (stack[:, ::3, 0, 0] * 255).round().long()  # the first channel of each stacked crop
    assert frame_of.tolist() == [[0, 0, 0, 1, 2], [3, 4, 5, 6, 7], [7, 8, 9, 9, 9]]  # clamped to [lo, hi]
    torch.testing.assert_close(data.face_stack(torch.tensor([4]), 1), data.faces(torch.tensor([4])))
    # the augmentation jitters all stacked frames alike, per colour
    aug = D.SyncNetAugment()
    x = torch.rand(2, 15, 64, 64)
    p = aug.sample(2, torch.Generator().manual_seed(0))
    y = aug.faces(x, p)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, 3:6], aug.faces(x[:, 3:6].contiguous(), p), atol=0.05, rtol=0)


# ---------------------------------------------------------------- hard negatives


def test_near_negatives_stay_in_the_pool_at_the_asked_distance() -> None:
    pool = torch.arange(0, 200)
    idx = torch.tensor([0, 1, 50, 100, 198, 199] * 50)
    out = D.near_indices(idx, pool, torch.Generator().manual_seed(0), (2, 15))
    d = (out - idx).abs()
    assert ((d >= 2) & (d <= 15)).all() and ((out >= 0) & (out < 200)).all()
    assert (out < idx).any() and (out > idx).any()  # both sides
    again = D.near_indices(idx, pool, torch.Generator().manual_seed(0), (2, 15))
    torch.testing.assert_close(out, again)
    # a pool with a gap: a frame whose neighbours were left out gets a far negative from the pool
    gappy = torch.cat([torch.arange(0, 10), torch.arange(60, 100)])
    out = D.near_indices(torch.full((40,), 5), gappy, torch.Generator().manual_seed(1), (2, 3))
    assert torch.isin(out, gappy).all() and ((out - 5).abs() >= 2).all()
    with pytest.raises(SyncTalkError):
        D.near_indices(idx, pool, torch.Generator(), (0, 3))


def test_hard_negatives_replace_only_negatives() -> None:
    g = torch.Generator().manual_seed(0)
    pool = torch.arange(300)
    face, audio, labels = D.syncnet_pairs(pool, pool, g)
    same = D.add_hard_negatives(face, audio, labels, pool, g, 0.0)
    torch.testing.assert_close(same, audio)
    hard = D.add_hard_negatives(face, audio, labels, pool, g, 1.0)
    pos = labels == 1
    torch.testing.assert_close(hard[pos], face[pos])
    d = (hard[~pos] - face[~pos]).abs()
    assert ((d >= 2) & (d <= 15)).all()
    half = D.add_hard_negatives(face, audio, labels, pool, g, 0.5)
    near = ((half[~pos] - face[~pos]).abs() <= 15).float().mean()
    assert 0.4 < float(near) < 0.8  # half re-drawn near, plus the far draws that happen to be near
    with pytest.raises(SyncTalkError):
        D.add_hard_negatives(face, audio, labels, pool, g, 1.5)


# ---------------------------------------------------------------- augmentation


def test_augment_parameters_are_seeded_and_bounded() -> None:
    aug = D.SyncNetAugment()
    p = aug.sample(500, torch.Generator().manual_seed(3))
    torch.testing.assert_close(p, aug.sample(500, torch.Generator().manual_seed(3)))
    assert p.shape == (500, 12) and p.dtype == torch.float32
    assert not torch.equal(p, aug.sample(500, torch.Generator().manual_seed(4)))
    assert ((p[:, 0] - 1).abs() <= aug.scale + 1e-6).all()
    assert (p[:, 1:3].abs() <= 2 * aug.shift + 1e-6).all()
    assert set(p[:, 3].tolist()) == {-1.0, 1.0}
    assert ((p[:, 11] >= 0) & (p[:, 11] <= aug.freq_mask)).all()
    assert set(D.SyncNetAugment(flip=False).sample(50, torch.Generator()).select(1, 3).tolist()) == {1.0}


def test_augment_faces_keeps_shape_and_range_and_is_identity_at_neutral_parameters() -> None:
    aug = D.SyncNetAugment()
    x = torch.rand(4, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    p = aug.sample(4, torch.Generator().manual_seed(1))
    y = aug.faces(x, p)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 0.01  # it changes something
    neutral = torch.tensor([[1.0, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0]]).repeat(4, 1)
    torch.testing.assert_close(aug.faces(x, neutral), x, atol=1e-4, rtol=0)
    flipped = neutral.clone()
    flipped[:, 3] = -1
    torch.testing.assert_close(aug.faces(x, flipped), x.flip(3), atol=1e-4, rtol=0)
    shifted = neutral.clone()
    shifted[:, 1] = 2 * 10 / 320  # 10 pixels: output column c shows input column c + 10
    torch.testing.assert_close(aug.faces(x, shifted)[..., :300], x[..., 10:310], atol=1e-4, rtol=0)
    # channels_last input stays channels_last
    cl = x.contiguous(memory_format=torch.channels_last)
    assert aug.faces(cl, p).is_contiguous(memory_format=torch.channels_last)


def test_augment_audio_changes_log_mel_only() -> None:
    aug = D.SyncNetAugment()
    a = _mel(6)
    p = aug.sample(6, torch.Generator().manual_seed(2))
    p[:, 11] = 5  # a 5-bin masked band in every row
    y = aug.audio(a, p, "mel")
    assert y.shape == a.shape
    for i in range(6):
        diff = y[i, 0] - a[i, 0] - p[i, 9]  # a gain would move every bin; the mask replaces 5 of them
        changed = (diff.abs() > 1e-5).any(dim=1)
        assert int(changed.sum()) == 5
        rows = changed.nonzero().flatten()
        assert int(rows.max() - rows.min()) == 4  # one contiguous band
    other = torch.randn(3, 32, 16, 16)
    assert aug.audio(other, p[:3], "reshape") is other
    loud = D.SyncNetAugment(audio_gain=0.5, freq_mask=0)
    q = loud.sample(6, torch.Generator().manual_seed(5))
    torch.testing.assert_close(loud.audio(a, q, "mel"), a + q[:, 9, None, None, None])
    assert (q[:, 9].abs() <= 0.5).all() and q[:, 9].abs().max() > 0.1


# ---------------------------------------------------------------- on in training, off in validation


class _Recorder(SyncNet):
    def __init__(self) -> None:
        super().__init__("mel", "tiny")
        self.seen: list[torch.Tensor] = []

    def forward(self, face: torch.Tensor, audio: torch.Tensor):  # type: ignore[override]
        self.seen.append(face.detach().clone())
        return super().forward(face, audio)


def _all_exact_crops(seen: list[torch.Tensor], crops: torch.Tensor) -> bool:
    """Whether every recorded face is exactly one of the dataset's crops."""
    flat = crops.flatten(1)
    return all(bool((flat == f.flatten()).all(dim=1).any()) for batch in seen for f in batch)


@pytest.mark.parametrize("augment", [True, False])
def test_training_augments_and_validation_does_not(augment: bool) -> None:
    from synctalk.training.config import SyncNetConfig
    from synctalk.training.loop import Speed, train_epoch
    from synctalk.training.syncnet import SyncNetTask, evaluate_syncnet

    torch.manual_seed(0)
    n = 24
    crops = torch.randint(0, 256, (n, 320, 320, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    feats = torch.randn(n, 4, 80, generator=torch.Generator().manual_seed(1)).numpy()
    data = D.FrameData(crops, feats, "mel")
    every = data.faces(torch.arange(n))
    model = _Recorder()
    assert dataclasses.asdict(SyncNetConfig())["augment"] is False  # asked for, not default
    speed = Speed(device="cpu", amp="none", channels_last=False, compile=False, cuda_graphs=False, batch_size=4,
                  lr=1e-3, cache_on_device=False)
    task = SyncNetTask(model, data, np.arange(20), np.arange(20, n), pairs_per_epoch=0, augment=augment,
                       device=torch.device("cpu"), speed=speed)
    metrics = train_epoch(task, 1, 1, progress=False)
    assert metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    assert _all_exact_crops(model.seen, every) is (not augment)
    model.seen.clear()
    evaluate_syncnet(model, data, torch.arange(20, n), device=torch.device("cpu"), batch_size=8)
    assert model.seen and _all_exact_crops(model.seen, every)


def test_train_flags_reach_the_syncnet_config(tmp_path) -> None:
    import argparse

    from synctalk.training.commands.legacy import add_arguments, plan
    from synctalk.training.config import SyncNetConfig, merge_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def config_of(*flags: str) -> SyncNetConfig:
        args = parser.parse_args(["--name", "p", "--dataset_dir", str(tmp_path), "--train_syncnet", "--device", "cpu",
                                  *flags])
        [(command, options)] = plan(vars(args))
        assert command == "train-syncnet"
        return merge_config(SyncNetConfig, options)

    cfg = config_of()
    assert cfg.augment is False and cfg.hard_negatives == 0.5 and cfg.face_frames is None
    cfg = config_of("--syncnet_augment", "--syncnet_hard_negatives", "0", "--syncnet_face_frames", "5",
                    "--syncnet_audio_context", "0")
    assert cfg.augment is True and cfg.hard_negatives == 0.0
    assert cfg.face_frames == 5 and cfg.audio_context == 0
    # the SyncNet's own width (the measured five-frame mobile critic) beside the UNet's, from one command line
    assert config_of("--width", "full", "--syncnet_width", "mobile").width == "mobile"
    args = parser.parse_args(["--name", "p", "--dataset_dir", str(tmp_path), "--device", "cpu",
                              "--syncnet_width", "mobile", "--syncnet_face_frames", "5"])
    [(command, options)] = plan(vars(args))
    assert command == "train-unet" and "width" not in options and "face_frames" not in options


# ---------------------------------------------------------------- the held-out offset metrics


class _Oracle(torch.nn.Module):
    """A critic that reads the frame number off the crop and the audio window: in sync when they match
    (`lag`: it takes audio frame j for face frame j - lag)."""

    face_frames = 1

    def __init__(self, lag: int = 0) -> None:
        super().__init__()
        self.lag = lag
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    @staticmethod
    def _unit(index: torch.Tensor) -> torch.Tensor:
        angle = index.float() * (2 * torch.pi / 100)  # offsets within ±15 stay below half a turn
        return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)

    def forward(self, face: torch.Tensor, audio: torch.Tensor):
        face_index = (face[:, 0, 0, 0] * 255).round()
        audio_index = audio[:, 0, 0, 32]  # frame i's own mel steps start at 32 of the 64 (8 frames before it)
        return self._unit(audio_index - self.lag), self._unit(face_index)

    def logits(self, a: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return self.scale * (a * f).sum(dim=1) - self.scale / 2


@pytest.mark.parametrize("lag", [0, 2])
def test_offset_metrics_of_a_critic_that_knows_the_answer(lag: int) -> None:
    from synctalk.training.syncnet import evaluate_syncnet

    n = 120
    crops = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 328, 328, 3).contiguous()
    feats = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 4, axis=1).repeat(80, axis=2)  # (n, 4, 80)
    data = D.FrameData(crops, feats, "mel")
    held_out = np.arange(80, 100)  # every offset within ±15 of these frames exists
    m = evaluate_syncnet(_Oracle(lag), data, held_out, device=torch.device("cpu"), batch_size=16)
    if lag == 0:
        assert m["offset_acc"] == 1.0 and m["offset_acc_1"] == 1.0 and m["clip_offset"] == 0
    else:  # its best offset is +2 for every frame: wrong, not within ±1, and the clip reads +2
        assert m["offset_acc"] == 0.0 and m["offset_acc_1"] == 0.0 and m["clip_offset"] == lag


def test_offset_scores_put_each_frame_s_best_offset_where_its_audio_is() -> None:
    """The score table the held-out figures (and benchmarks/syncnet_offsets.py) read: one row per frame,
    column 15 its own audio, −inf past the video's ends."""
    from synctalk.training.syncnet import MAX_OFFSET, offset_scores

    n = 120
    crops = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 328, 328, 3).contiguous()
    feats = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 4, axis=1).repeat(80, axis=2)
    data = D.FrameData(crops, feats, "mel")
    scores, valid = offset_scores(_Oracle(lag=2), data, np.array([5, 60, 110]), device=torch.device("cpu"),
                                  batch_size=16)
    assert scores.shape == valid.shape == (3, 2 * MAX_OFFSET + 1)
    assert (scores.argmax(dim=1) - MAX_OFFSET).tolist() == [2, 2, 2]  # the lag, for every frame
    assert not bool(valid[0, :MAX_OFFSET - 5].any()) and bool(torch.isinf(scores[0, :MAX_OFFSET - 5]).all())
    assert bool(valid[1].all()) and not bool(valid[2, MAX_OFFSET + 10:].any())


def test_a_run_of_frames_finds_the_offset_that_single_frames_miss() -> None:
    """Each frame alone prefers a wrong offset (±6, alternating), yet offset 0 fits every one of them: summed
    over runs of 5 frames, 0 wins; runs mostly outside speech are not counted."""
    from synctalk.training.syncnet import MAX_OFFSET, run_offset_accuracy

    scores = torch.zeros(12, 2 * MAX_OFFSET + 1)
    scores[:, MAX_OFFSET] = 1.0
    for i in range(12):
        scores[i, MAX_OFFSET + (6 if i % 2 == 0 else -6)] = 1.5
    scores[0, :3] = float("-inf")  # past the video's start
    speech = np.ones(12, bool)
    assert run_offset_accuracy(scores, speech, frames=1)[0] == 0.0
    assert run_offset_accuracy(scores, speech, frames=5) == (1.0, 8)
    speech[:8] = False  # only runs starting at 6 or later are mostly speech
    assert run_offset_accuracy(scores, speech, frames=5) == (1.0, 2)
    assert np.isnan(run_offset_accuracy(scores, np.zeros(12, bool))[0])


class _StillAfter(_Oracle):
    """The oracle, but from frame `still` on the mouth stops moving (one face for every frame): as in a
    pause, no offset is more right than another there."""

    def __init__(self, still: int) -> None:
        super().__init__(0)
        self.still = still

    def forward(self, face: torch.Tensor, audio: torch.Tensor):
        a, f = super().forward(face, audio)
        frozen = (face[:, 0, 0, 0] * 255).round() >= self.still
        return a, torch.where(frozen[:, None], self._unit(torch.full_like(frozen, 25, dtype=torch.float32)), f)


def test_offset_metrics_at_speech_leave_out_the_silent_frames() -> None:
    from synctalk.training.syncnet import evaluate_syncnet

    n = 120
    crops = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 328, 328, 3).contiguous()
    feats = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 4, axis=1).repeat(80, axis=2)
    data = D.FrameData(crops, feats, "mel")
    speech = np.arange(n) < 90  # the held-out frames 90-99 are a pause, where the mouth is still
    m = evaluate_syncnet(_StillAfter(90), data, np.arange(80, 100), device=torch.device("cpu"), batch_size=16,
                         speech=speech)
    assert m["offset_acc_speech"] == 1.0 and m["offset_acc_1_speech"] == 1.0
    # the 8 runs of 5 frames that are mostly speech: the 6 inside it are right, the 2 reaching 1-2 frames
    # into the pause are pulled off by its still mouth
    assert m["offset_acc_1_speech_run5"] == 0.75
    assert m["offset_acc"] == 0.5 and m["offset_acc_1"] == 0.5  # the pause's frames pick a wrong offset
    assert m["val_acc_speech"] >= m["val_acc"]
    no_mask = evaluate_syncnet(_StillAfter(90), data, np.arange(80, 100), device=torch.device("cpu"), batch_size=16)
    assert "offset_acc_speech" not in no_mask and no_mask["offset_acc"] == m["offset_acc"]


def test_contrast_runs_are_drawn_at_speech_and_only_speech_frames_are_targets() -> None:
    from synctalk.training.loop import Speed
    from synctalk.training.syncnet import SPEECH_MARGIN, SyncNetTask, _best_key

    n = 200
    crops = torch.zeros((n, 320, 320, 3), dtype=torch.uint8)
    data = D.FrameData(crops, np.zeros((n, 4, 80), np.float32), "mel")
    speech = np.zeros(n, bool)
    speech[100:140] = True  # one stretch of speech in 180 training frames
    speed = Speed(device="cpu", amp="none", channels_last=False, compile=False, cuda_graphs=False, batch_size=32,
                  lr=1e-3, cache_on_device=False)
    task = SyncNetTask(torch.nn.Linear(1, 1), data, np.arange(180), np.arange(180, n), pairs_per_epoch=4096,
                       objective="contrast", speech=speech, device=torch.device("cpu"), speed=speed)
    idx, _audio, target, _jitter = task._drawn(4096, torch.Generator().manual_seed(0))
    near = (idx >= 100 - SPEECH_MARGIN) & (idx < 140 + SPEECH_MARGIN)
    assert near.float().mean() > 0.6  # 25 % of the frames are at speech; most drawn frames are
    assert torch.equal(target, near.float())  # the targets: speech, widened by the margin
    assert len(idx) % 32 == 0 and bool((idx < 180).all())  # whole batches, never the held-out tail
    # the best epoch is the one whose critic finds the offset at speech
    assert _best_key({"offset_acc": 0.9, "offset_acc_1_speech": 0.3}) < _best_key({"offset_acc": 0.1,
                                                                                     "offset_acc_1_speech": 0.5})


def test_the_contrast_loss_ignores_frames_that_are_not_targets() -> None:
    from synctalk.training.runtime import make_scaler
    from synctalk.training.syncnet import contrast_step

    torch.manual_seed(0)
    model = SyncNet("mel", "tiny")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves the weights as they are
    faces, audio = torch.rand(8, 3, 64, 64), torch.randn(8, *model.audio_shape)
    model.eval()
    scaler = make_scaler(torch.device("cpu"), "none")
    every, _ = contrast_step(model, opt, scaler, faces, audio, 4, torch.device("cpu"), "none")
    mask = torch.tensor([1., 1., 0., 0., 1., 1., 0., 0.])
    masked, _ = contrast_step(model, opt, scaler, faces, audio, 4, torch.device("cpu"), "none", speech=mask)
    assert not torch.isclose(every, masked)  # the cross-entropy of frames 2, 3, 6 and 7 left out
    none, _ = contrast_step(model, opt, scaler, faces, audio, 4, torch.device("cpu"), "none",
                            speech=torch.zeros(8))
    assert torch.isclose(none, every)  # a batch without any target counts every frame
