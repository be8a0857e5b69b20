"""Rendering: new speech → MP4 of the person (frame count, audio, ping-pong walk, silence, paste-back, errors)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import SPEECH_WAV
from helpers_render import NAME, save_random_unet, trained_person

SR = 16000


@pytest.fixture(scope="session")
def person(tmp_path_factory) -> SimpleNamespace:
    return trained_person(tmp_path_factory)


def speech(seconds: float, offset: float = 1.0) -> np.ndarray:
    """`seconds` of the fixture speech from `offset` on (mid-sentence: loud from the first frame)."""
    from synctalk import media

    audio = media.load_audio(SPEECH_WAV)
    a = int(offset * SR)
    return audio[a:a + int(round(seconds * SR))]


def write_wav(path: Path, audio: np.ndarray) -> Path:
    import soundfile as sf

    sf.write(str(path), audio, SR, subtype="PCM_16")
    return path


def read_video(path: Path) -> list[np.ndarray]:
    from synctalk import media

    return list(media.iter_frames(path))


def real_frame(person: SimpleNamespace, index: int) -> np.ndarray:
    import cv2

    return cv2.imread(str(person.layout.frame_path(index)))


def box_of(person: SimpleNamespace, index: int) -> np.ndarray:
    return np.load(person.layout.crop_boxes)[index]


def diff_inside_outside(frame: np.ndarray, real: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """Mean |difference| inside the central half of the box, and outside the box."""
    x1, y1, x2, y2 = (int(v) for v in box)
    d = np.abs(frame.astype(np.float32) - real.astype(np.float32)).mean(axis=2)
    qx, qy = (x2 - x1) // 4, (y2 - y1) // 4
    inside = float(d[y1 + qy:y2 - qy, x1 + qx:x2 - qx].mean())
    mask = np.ones(d.shape, bool)
    mask[y1:y2, x1:x2] = False
    return inside, float(d[mask].mean())


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="session")
def rendered(person) -> SimpleNamespace:
    """3 s of speech rendered through render() (the API the benchmark uses)."""
    from synctalk.render import render

    wav = write_wav(person.root / "speech3.wav", speech(3.0))
    out = person.root / "out3.mp4"
    result = render(NAME, wav, out, dataset_dir=person.dataset_dir, checkpoint_dir=person.checkpoint_dir,
                    device="cpu", batch_size=8, progress=False)
    return SimpleNamespace(result=result, out=out, frames=read_video(out))


def test_three_seconds_give_75_frames_with_audio(rendered):
    from synctalk import media

    info = media.probe(rendered.out)
    assert rendered.result.frames == 75 == len(rendered.frames)
    assert info.has_video and info.has_audio
    assert info.fps == 25.0
    assert abs(info.duration - 3.0) <= 0.05
    assert rendered.result.output == rendered.out and rendered.result.fps > 0


def test_mouth_is_redrawn_in_the_box_and_the_rest_is_the_avatar(person, rendered):
    # no --start_frame and no loop: output frame k shows avatar frame k (the clip is longer than 3 s)
    for k in (10, 40):
        inside, outside = diff_inside_outside(rendered.frames[k], real_frame(person, k), box_of(person, k))
        assert outside < 3.0, f"frame {k}: the picture outside the face box changed ({outside:.1f})"
        assert inside > 3 * outside + 5, f"frame {k}: the random UNet's mouth was not pasted ({inside:.1f})"


def test_cli_loop_back_ends_on_the_start_frame_and_silence_shows_real_frames(person):
    from synctalk.cli import main

    # 0.6 s silence, 1.2 s speech, 0.6 s silence: 60 frames; real frames at both ends
    audio = np.concatenate([np.zeros(int(0.6 * SR), np.float32), speech(1.2), np.zeros(int(0.6 * SR), np.float32)])
    wav = write_wav(person.root / "quiet_ends.wav", audio)
    out = person.root / "loop.mp4"
    rc = main(["infer", "--name", NAME, "--audio_path", str(wav), "--output", str(out), "--start_frame", "100",
               "--loop_back", "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir",
               str(person.checkpoint_dir), "--device", "cpu", "--batch_size", "8", "--no_progress"])
    assert rc == 0
    frames = read_video(out)
    assert len(frames) == math.ceil(2.4 * 25) == 60
    # first and last output frames both show avatar frame 100, untouched (silence): no more change in
    # the face box than the encoder makes elsewhere
    for f in (frames[0], frames[-1]):
        inside, outside = diff_inside_outside(f, real_frame(person, 100), box_of(person, 100))
        assert inside < outside + 2.0 and outside < 3.0
    assert np.abs(frames[0].astype(np.float32) - frames[-1].astype(np.float32)).mean() < 1.0
    # the middle (speech) is generated: the face box differs from the source frame there
    from synctalk.render import pingpong_indices

    src = pingpong_indices(60, len(np.load(person.layout.crop_boxes)), 100, loop_back=True)
    mid = 30
    inside, outside = diff_inside_outside(frames[mid], real_frame(person, int(src[mid])), box_of(person, int(src[mid])))
    assert inside > 3 * outside + 5


# ---------------------------------------------------------------- pieces


def test_pingpong_walk_bounces_and_loops_back():
    from synctalk.render import pingpong_indices

    idx = pingpong_indices(30, 10, start_frame=7)
    assert idx[:6].tolist() == [7, 8, 9, 8, 7, 6]
    assert np.abs(np.diff(idx)).max() == 1 and idx.min() == 0 and idx.max() == 9
    for count in (1, 2, 7, 8, 61):
        loop = pingpong_indices(count, 10, start_frame=3, loop_back=True)
        assert loop[0] == loop[-1] == 3
        assert np.abs(np.diff(loop)).max(initial=0) <= 1
    assert pingpong_indices(5, 1).tolist() == [0] * 5
    from synctalk.errors import SyncTalkError

    with pytest.raises(SyncTalkError, match="start_frame"):
        pingpong_indices(5, 10, start_frame=10)


def test_silent_start_and_end_use_real_frames_with_a_crossfade():
    from synctalk.render import generation_weights

    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(SR // 2), 0.1 * rng.standard_normal(SR), np.zeros(SR // 2)]).astype(np.float32)
    w = generation_weights(audio, 50)
    assert w[0] == 0 and w[-1] == 0
    assert (w[14:36] == 1).all()
    assert (np.diff(w[:14]) >= 0).all() and (np.diff(w[36:]) <= 0).all()
    assert 0 < w[8] < 1  # a cross-fade, not a cut
    assert (generation_weights(0.1 * rng.standard_normal(SR).astype(np.float32), 25) == 1).all()
    assert (generation_weights(np.zeros(SR, np.float32), 25) == 0).all()


def test_paste_back_on_torch_matches_the_cpu_path():
    import torch

    from synctalk.render import feather_alpha, paste_back, paste_back_torch

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (328, 328, 3), dtype=np.uint8)
    for box in ([50, 20, 250, 220], [100, 40, 500, 440]):  # shrinking and enlarging
        a = paste_back(frame.copy(), crop, box)
        b = [frame.copy()]
        t = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
        paste_back_torch(b, t, [box], [1.0])
        assert np.abs(a.astype(int) - b[0].astype(int)).mean() < 6
        # the border of the box keeps the frame: no seam
        x1, y1 = box[0], box[1]
        assert np.abs(a[y1, max(x1, 0):min(box[2], 400)].astype(int) - frame[y1, max(x1, 0):min(box[2], 400)]).max() <= 1
    alpha = feather_alpha(100, 100)
    assert alpha[50, 50] == 1 and alpha[0, 0] < 0.05 and alpha[50, 0] < 0.05


def test_conv_bn_folding_keeps_the_output():
    import torch

    from synctalk.render import fuse_conv_bn
    from unet_328 import build_unet

    torch.manual_seed(0)
    model = build_unet("mel", "tiny").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x, a = torch.rand(2, 6, 320, 320), torch.rand(2, 1, 80, 64)
    with torch.no_grad():
        before = model(x, a)
        after = fuse_conv_bn(model)(x, a)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5)


# ---------------------------------------------------------------- errors


def _infer(person, *extra: str, name: str = NAME) -> list[str]:
    return ["infer", "--name", name, "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir",
            str(person.checkpoint_dir), "--device", "cpu", "--no_progress", "--output",
            str(person.root / "never.mp4"), *extra]


def test_unknown_name_says_what_was_looked_for_and_how_to_train(person, tmp_path, capsys):
    from synctalk.cli import main

    wav = write_wav(tmp_path / "s.wav", speech(0.5))
    assert main(_infer(person, "--audio_path", str(wav), name="nobody")) == 1
    err = capsys.readouterr().err
    assert "nobody" in err and "checkpoint_best.pth" in err and "train_328.py --name nobody" in err


@pytest.mark.parametrize("kind", ["empty", "text", "missing", "silent_video"])
def test_unreadable_or_empty_audio_is_a_clear_error(person, tmp_path, kind):
    from synctalk.errors import SyncTalkError
    from synctalk.render import render

    path = tmp_path / "speech.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not audio\n" * 50)
    elif kind == "silent_video":  # a media file with no audio track
        path = tmp_path / "noaudio.mp4"
        from synctalk import media

        with media.VideoWriter(path, 64, 64, 25) as w:
            for _ in range(5):
                w.write(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SyncTalkError, match=r"speech\.wav|noaudio\.mp4|audio"):
        render(NAME, path, tmp_path / "o.mp4", dataset_dir=person.dataset_dir,
               checkpoint_dir=person.checkpoint_dir, device="cpu", progress=False)
    assert not (tmp_path / "o.mp4").exists()


def test_checkpoint_of_another_audio_model_is_refused(person, tmp_path):
    from synctalk.errors import SyncTalkError
    from synctalk.render import render

    wav = write_wav(tmp_path / "s.wav", speech(0.5))
    other = save_random_unet(tmp_path / "ave.pth", asr="ave")
    with pytest.raises(SyncTalkError, match="'ave'.*only mel"):
        render(NAME, wav, tmp_path / "o.mp4", dataset_dir=person.dataset_dir, checkpoint_dir=person.checkpoint_dir,
               checkpoint=other, device="cpu", progress=False)
    with pytest.raises(SyncTalkError, match="--asr hubert"):
        render(NAME, wav, tmp_path / "o.mp4", dataset_dir=person.dataset_dir, checkpoint_dir=person.checkpoint_dir,
               asr="hubert", device="cpu", progress=False)


def test_a_file_that_is_not_a_unet_checkpoint_is_refused(person, tmp_path, capsys):
    import torch

    from synctalk.cli import main

    wav = write_wav(tmp_path / "s.wav", speech(0.5))
    bare = tmp_path / "bare.pth"
    torch.save({"inc.weight": torch.zeros(1)}, bare)  # a bare state dict
    syncnet = tmp_path / "syncnet.pth"
    torch.save({"kind": "syncnet", "model": {}, "asr": "mel"}, syncnet)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage" * 100)
    for path, words in ((bare, "not a unet checkpoint"), (syncnet, "syncnet checkpoint"), (junk, "not a unet")):
        assert main(_infer(person, "--audio_path", str(wav), "--checkpoint", str(path))) == 1
        err = capsys.readouterr().err
        assert str(path) in err and words in err


def test_generator_padding_and_micro_batches_do_not_change_frames(person):
    """A short last batch padded to the usual size (GPU) and CPU micro-batches give the same crops."""
    import torch

    from synctalk.layout import checkpoint_layout
    from synctalk.render import Generator, load_generator

    ck = checkpoint_layout(person.checkpoint_dir, NAME)
    model, ckpt = load_generator(ck.best(ck.unet_dir), torch.device("cpu"))
    gen = Generator(model, ckpt, torch.device("cpu"))
    crops = np.stack([np.asarray(np.load(person.layout.crop_cache, mmap_mode="r")[i]) for i in (3, 9, 27)])
    feats = torch.from_numpy(np.load(person.layout.features("mel")))
    idx = np.array([3, 9, 27])
    plain = gen(crops, feats, idx)
    gen.pad_to, gen.micro = 8, 0  # as on a GPU: one shape, one network call
    padded = gen(crops, feats, idx)
    assert padded.shape == plain.shape == (3, 3, 328, 328)
    assert torch.allclose(plain, padded, atol=1e-5)
    # the 4-pixel border is the real crop; the inner 320 is the network's
    real = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(plain[:, :, :4], real[:, :, :4])
    assert not torch.allclose(plain[:, :, 100:200, 100:200], real[:, :, 100:200, 100:200], atol=0.02)
