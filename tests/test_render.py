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

    # 0.6 s silence, 1.2 s speech, 0.6 s silence: 60 frames; real frames at both ends (--no_silence)
    audio = np.concatenate([np.zeros(int(0.6 * SR), np.float32), speech(1.2), np.zeros(int(0.6 * SR), np.float32)])
    wav = write_wav(person.root / "quiet_ends.wav", audio)
    outs = {}
    for flag in ("--no_silence", None):
        out = person.root / f"loop{flag or ''}.mp4"
        rc = main(["infer", "--name", NAME, "--audio_path", str(wav), "--output", str(out), "--start_frame", "100",
                   "--loop_back", "--dataset_dir", str(person.dataset_dir), "--checkpoint_dir",
                   str(person.checkpoint_dir), "--device", "cpu", "--batch_size", "8", "--no_progress"]
                  + ([flag] if flag else []))
        assert rc == 0
        outs[flag] = read_video(out)
        assert len(outs[flag]) == math.ceil(2.4 * 25) == 60
    frames = outs["--no_silence"]
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
    # with the silence handling (the default) the silent ends get the resting mouth instead: generated
    # (the face box changes) yet the loop still ends on the very frame it began with
    rest = outs[None]
    inside, outside = diff_inside_outside(rest[0], real_frame(person, 100), box_of(person, 100))
    assert outside < 3.0 and inside > outside + 2.0
    assert np.abs(rest[0].astype(np.float32) - rest[-1].astype(np.float32)).mean() < 1.0
    assert np.abs(rest[mid].astype(np.float32) - frames[mid].astype(np.float32)).mean() < 1.0  # speech: the same


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


# ---------------------------------------------------------------- lag 0 end to end, silence


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> SimpleNamespace:
    from helpers_render import synthetic_person

    return synthetic_person(tmp_path_factory)


def test_infer_shows_at_frame_t_the_mouth_of_the_audio_at_t(syn, tmp_path):
    """A clip whose mouth brightness is the loudness at each frame's instant, rendered through
    `render` (features, audio windows, paste-back, MP4 writing) by an oracle UNet that paints the
    loudness of the middle of its audio window: the written MP4's mouth must peak at lag 0 against
    the real recording of that speech. An oracle reading one frame later must show as −1."""
    from helpers_render import BrightnessMeter, oracle_generator

    from synctalk import media
    from synctalk.evaluate import lag_profile, peak_lag
    from synctalk.render import render

    meter = BrightnessMeter()
    real = meter.openings(meter.measure(read_video(syn.reference))[0])
    peaks = {}
    for column in (None, 36):  # the window's middle (time t), and 4 mel columns = one frame later
        out = tmp_path / f"oracle_{column}.mp4"
        res = render(syn.name, syn.reference, out, dataset_dir=syn.dataset_dir, generator=oracle_generator(
            syn.layout, column), progress=False)
        frames = read_video(out)
        assert res.frames == len(frames) == len(real) == 100
        assert media.probe(out).has_audio
        generated = meter.openings(meter.measure(frames)[0])
        peaks[column] = peak_lag(lag_profile(generated, real))
    assert peaks[None]["lag"] == 0 and abs(peaks[None]["subframe"]) < 0.25 and peaks[None]["corr"] > 0.9
    assert peaks[36]["lag"] == -1  # the test sees a one-frame error
    # and the MP4's sound starts where its pictures do: its audio is the input's, not delayed by the
    # AAC encoder's priming samples (the muxer's edit list removes them)
    sent, got = media.load_audio(syn.reference), media.load_audio(out)
    n = min(sent.size, got.size)
    spec = np.fft.rfft(got[:n], 2 * n) * np.conj(np.fft.rfft(sent[:n], 2 * n))
    xc = np.fft.irfft(spec, 2 * n)
    shift = int(np.argmax(np.concatenate([xc[-800:], xc[:801]]))) - 800  # within ±50 ms
    assert shift == 0


def test_voice_activity_finds_the_pauses_of_real_speech():
    from synctalk import media
    from synctalk.render import pauses, voice_activity
    from synctalk.audio.activity import centred_rms

    from conftest import SHARED

    audio = media.load_audio(SPEECH_WAV)
    n = math.ceil(audio.size / 640)
    active = voice_activity(audio, n)
    found = pauses(active)
    assert 0.6 < active.mean() < 0.95 and len(found) >= 6
    assert all(b - a >= 8 for a, b in found)  # 0.3 s at 25 fps
    db = 20 * np.log10(np.maximum(centred_rms(audio, n), 1e-8))
    speech_level = np.median(db[active])
    for a, b in found:  # a pause is far quieter than the speech around it
        assert np.median(db[a:b]) < speech_level - 15
    # GRID: 30 sentences in 90 s, each with silence before and after
    grid = media.load_audio(SHARED / "fixtures" / "real" / "grid_s1_unseen_90s.mp4")
    g = pauses(voice_activity(grid, math.ceil(grid.size / 640)))
    assert len([p for p in g if p[1] - p[0] >= 20]) >= 25


def test_rest_weights_cover_pauses_with_ramps_and_leave_speech_alone():
    from synctalk.render import rest_weights

    active = np.ones(60, bool)
    active[:10] = False  # leading silence: resting mouth from the first frame
    active[25:45] = False  # a 20-frame pause inside the speech
    active[50:55] = False  # 5 frames: too short to rest
    w = rest_weights(active)
    assert (w[:4] == 1).all() and (np.diff(w[:10]) <= 0).all() and 0 < w[7] < 1
    assert (w[8:25] == 0).all()  # the lips open a little before the sound starts
    assert w[25] == w[26] == 0 and w[43] == w[44] == 0  # ... and close a little after it ends
    inner = w[27:43]
    assert (inner > 0).all() and (inner[6:10] == 1).all()
    assert (np.diff(inner[:5]) > 0).all() and (np.diff(inner[-5:]) < 0).all()  # cross-fades, not cuts
    assert (w[45:] == 0).all()


def test_pauses_take_the_resting_mouth_of_a_silent_closed_frame(syn, tmp_path):
    """Resting frames have silence in their whole audio window and a closed mouth; in a rendered pause
    the oracle paints the silent window's (dark) mouth, steady, with or without --no_silence differing."""
    from helpers_render import BrightnessMeter, oracle_generator

    from synctalk import media
    from synctalk.render import pauses, render, voice_activity
    from synctalk.render.silence import dataset_resting_frames

    cand = dataset_resting_frames(syn.layout, syn.frames, 8, 8)
    assert len(cand) > 0
    assert (syn.levels[cand] < 0.05).all()
    meter = BrightnessMeter()
    out = tmp_path / "rest.mp4"
    render(syn.name, syn.reference, out, dataset_dir=syn.dataset_dir, generator=oracle_generator(syn.layout),
           progress=False)
    gen = meter.openings(meter.measure(read_video(out))[0])
    audio = media.load_audio(syn.reference)
    inner = [(a, b) for a, b in pauses(voice_activity(audio, len(gen))) if a > 0 and b < len(gen)]
    assert inner
    for a, b in inner:
        core = gen[a + 7:b - 7] if b - a > 14 else gen[(a + b) // 2:(a + b) // 2 + 1]
        assert core.max() < 45 and np.ptp(core) < 3  # closed (30 = no sound) and steady


def test_the_blend_weights_made_on_the_device_are_the_host_ones():
    import torch

    from synctalk.render.paste import feather_alpha, feather_alpha_torch

    for h, w in ((100, 100), (37, 211), (1, 5)):
        np.testing.assert_allclose(feather_alpha_torch(h, w, torch.device("cpu")).numpy(), feather_alpha(h, w),
                                   atol=1e-6)


def test_paste_back_on_torch_pastes_a_batch_of_frames_each_in_its_box():
    import torch

    from synctalk.render import paste_back, paste_back_torch

    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) for _ in range(3)]
    crops = rng.integers(0, 256, (3, 328, 328, 3), dtype=np.uint8)
    boxes = [[50, 20, 250, 220], [-30, 10, 170, 210], [120, 60, 380, 320]]  # inside, off the left, off the bottom
    weights = [1.0, 0.0, 0.5]  # the second stays the real frame
    want = [paste_back(f.copy(), c, b, w) if w > 0 else f.copy() for f, c, b, w in zip(frames, crops, boxes, weights)]
    got = [f.copy() for f in frames]
    paste_back_torch(got, torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, boxes, weights)
    for a, b in zip(want, got):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 6
    assert np.array_equal(got[1], frames[1])
