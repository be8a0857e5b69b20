"""Audio features: row counts, alignment, and every model's real loading code on tiny stand-in models."""

from __future__ import annotations

import types

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import SPEECH_WAV, VIDEOS
from synctalk import media
from synctalk.audio import ave, hubert, wenet
from synctalk.audio.features import compute_features, features_for_file, fit_audio
from synctalk.audio.registry import ASR_MODELS, get_spec
from synctalk.errors import SyncTalkError

SR = 16000


# ------------------------------------------------------------------------------------------------
# tiny stand-ins for the real weights, saved in the real formats


def _save_tiny_hubert(dest, hidden=1024):
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=8, intermediate_size=64,
                       conv_dim=(32,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16)
    HubertModel(cfg).save_pretrained(dest)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(dest)


class _TinyWenet(torch.nn.Module):
    """Same interface as the reference encoder.onnx: 67 fbank frames → (1, 16, 512)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 4, 3, 2)
        self.c2 = torch.nn.Conv2d(4, 4, 3, 2)
        self.proj = torch.nn.Linear(4 * 19, 512)

    def forward(self, chunk, offset, att_cache, cnn_cache):
        x = torch.relu(self.c2(torch.relu(self.c1(chunk / 10.0))))  # (1, 4, 16, 19)
        x = x.permute(0, 2, 1, 3).reshape(1, x.shape[2], -1)
        y = self.proj(x) + offset.float().reshape(1, 1, 1) * 1e-3 + att_cache.mean() + cnn_cache.mean()
        return y, att_cache + 1.0, cnn_cache * 2.0


def _export_tiny_wenet(path, input_names=wenet.INPUT_NAMES):
    torch.manual_seed(0)
    args = (torch.zeros(1, 1, 67, 80), torch.full((1,), 100, dtype=torch.int64), torch.zeros(3, 8, 16, 128),
            torch.zeros(3, 1, 512, 14))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_TinyWenet().eval(), args, str(path), input_names=list(input_names),
                          output_names=["output", "r_att_cache", "r_cnn_cache"], opset_version=13, dynamo=False)


def _random_ave_state(variant):
    torch.manual_seed(1)
    model = ave.build_encoder(variant)
    for m in model.modules():  # non-trivial batch-norm statistics, so a wrong mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model, model.state_dict()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    _save_tiny_hubert(root / "hubert")
    from test_whisper import save_tiny_whisper

    save_tiny_whisper(root / "whisper")  # found as <models dir>/whisper/
    _export_tiny_wenet(root / "wenet_encoder.onnx")
    _, state = _random_ave_state("synctalk")
    # SyncTalk's audio_visual_encoder.pth: the encoder's Sequential alone, no prefix
    torch.save({k[len("audio_encoder."):]: v for k, v in state.items()}, root / "audio_visual_encoder.pth")
    return root


@pytest.fixture(scope="module")
def speech():
    audio, sr = sf.read(SPEECH_WAV, dtype="float32")
    assert sr == SR
    return audio if audio.ndim == 1 else audio.mean(1)


# ------------------------------------------------------------------------------------------------
# row count = frame count, for every model, on a real video's audio


@pytest.fixture(scope="module")
def clip():
    path = VIDEOS / "clip5.mp4"
    frames = sum(1 for _ in media.iter_frames(path))
    return path, frames


@pytest.mark.parametrize("asr", ASR_MODELS)
def test_rows_match_video_frames(asr, clip, tiny_models):
    path, frames = clip
    feats = features_for_file(asr, path, frames, models_dir=tiny_models, progress=False)
    spec = get_spec(asr).for_rows(feats.shape[1:])  # whisper's width is its model's (24 here)
    assert feats.shape == (frames, *spec.frame_shape) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std() > 0
    # the registry turns any row of it into the network's input, on numpy and torch alike
    idx = [0, frames // 2, frames - 1]
    expect = np.stack([spec.window_tensor(feats, i) for i in idx])
    got = spec.batch_windows(torch.from_numpy(feats), torch.tensor(idx)).numpy()
    assert got.shape == (3, *spec.tensor_shape)
    np.testing.assert_array_equal(got, expect)


def test_default_frame_count_is_duration_times_25(clip):
    path, _ = clip
    audio = media.load_audio(path, SR)
    feats = features_for_file("mel", path, progress=False)
    assert feats.shape[0] == int(np.ceil(round(audio.size / SR * 25, 6)))


def test_audio_shorter_or_longer_than_the_video(speech):
    n = 100  # 4 s of video
    long = compute_features("mel", speech[: 10 * SR], n, progress=False)
    exact = compute_features("mel", speech[: n * 640 + 512], n, progress=False)
    np.testing.assert_array_equal(long, exact)  # audio past the end changes no row
    short = compute_features("mel", speech[: 2 * SR], n, progress=False)  # 2 s of speech for 4 s of video
    silence = compute_features("mel", np.zeros(SR, np.float32), 10, progress=False)
    assert short.shape == long.shape
    np.testing.assert_allclose(short[:45], long[:45], atol=1e-5)
    np.testing.assert_allclose(short[55:], np.broadcast_to(silence[5], short[55:].shape), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# alignment: a tone burst at t = 2.00 s


def _burst(seconds=4.0, start=2.0, freq=440.0):
    t = np.arange(int(seconds * SR)) / SR
    return np.where(t >= start, 0.5 * np.sin(2 * np.pi * freq * t), 0.0).astype(np.float32)


def _first_changed(a, b, tol=1e-3):
    diff = np.abs(a - b).reshape(a.shape[0], -1).max(1)
    return int(np.argmax(diff > tol)) if (diff > tol).any() else None


def test_mel_tone_burst_changes_row_50():
    n = 100
    burst = compute_features("mel", _burst(), n, progress=False)
    quiet = compute_features("mel", np.zeros(4 * SR, np.float32), n, progress=False)
    assert abs(_first_changed(burst, quiet) - 50) <= 1
    assert np.abs(burst[55:] - quiet[55:]).max() > 1.0  # clearly louder, not a rounding blip
    # the network input of frame i covers rows [i-8, i+8): it first sees the burst at i + 8 ≈ 50
    spec = get_spec("mel")
    wins_b = np.stack([spec.window_tensor(burst, i) for i in range(n)])
    wins_q = np.stack([spec.window_tensor(quiet, i) for i in range(n)])
    assert abs(_first_changed(wins_b, wins_q) - 42) <= 1
    # (1, 80, 64): mel bins tall, time wide; the burst enters from the right edge
    first = _first_changed(wins_b, wins_q)
    assert np.abs(wins_b[first, 0, :, -4:] - wins_q[first, 0, :, -4:]).max() > 0
    assert np.abs(wins_b[first, 0, :, :56] - wins_q[first, 0, :, :56]).max() == 0


def test_ave_and_wenet_framing_on_a_tone_burst(tiny_models):
    n = 100
    quiet = np.zeros(4 * SR, np.float32)
    for asr, expect in (("ave", 46), ("wenet", 41)):
        # ave: row r's 200 ms window starts at mel frame 3.2·(r-1) (80 Hz); the onset is mel frame 160
        # wenet: frame i's chunk reaches 350 ms past its start: 0.04·i + 0.35 ≥ 2.0
        a = compute_features(asr, _burst(), n, models_dir=tiny_models, progress=False)
        b = compute_features(asr, quiet, n, models_dir=tiny_models, progress=False)
        assert abs(_first_changed(a, b, tol=1e-4) - expect) <= 1, asr


# ------------------------------------------------------------------------------------------------
# ave


def test_ave_window_starts_follow_the_reference():
    n = 2000
    starts = ave.window_starts(n, 10**6)
    reference = [int(80.0 * (k / 25.0)) for k in range(n - 1)]
    np.testing.assert_array_equal(starts, [reference[0], *reference])  # first row repeated
    assert ave.window_starts(10, 20).max() == 4  # clamped to the last full window


def test_ave_loads_both_checkpoint_formats(tmp_path, speech):
    mel = torch.randn(3, 1, 80, 16)
    # SyncTalk: flat encoder dict
    model, state = _random_ave_state("synctalk")
    flat = tmp_path / "audio_visual_encoder.pth"
    torch.save({k[len("audio_encoder."):]: v for k, v in state.items()}, flat)
    assert ave.read_checkpoint(flat)[0] == "synctalk"
    with torch.no_grad():
        np.testing.assert_allclose(ave.load_encoder(flat)(mel).numpy(), model.eval()(mel).numpy(), atol=1e-5)
    # Wav2Lip SyncNet: {"state_dict": {audio_encoder.*, face_encoder.*}}, saved through DataParallel
    model, state = _random_ave_state("wav2lip")
    face = {"face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7)}
    ckpt = {"state_dict": {f"module.{k}": v for k, v in {**state, **face}.items()}, "global_step": 10,
            "global_epoch": 1, "optimizer": None}
    syncnet = tmp_path / "lipsync_expert.pth"
    torch.save(ckpt, syncnet)
    assert ave.read_checkpoint(syncnet)[0] == "wav2lip"
    with torch.no_grad():
        np.testing.assert_allclose(ave.load_encoder(syncnet)(mel).numpy(), model.eval()(mel).numpy(), atol=1e-5)
    # and both run end to end through the one path (a models folder holding only the SyncNet file)
    only = tmp_path / "only_syncnet"
    only.mkdir()
    syncnet.rename(only / "lipsync_expert.pth")
    feats = compute_features("ave", speech[: 2 * SR], 50, models_dir=only, progress=False)
    assert feats.shape == (50, 512)


@pytest.mark.parametrize("case", ["text", "other_model", "wrong_shapes", "missing_keys"])
def test_ave_rejects_other_files(tmp_path, case):
    path = tmp_path / "audio_visual_encoder.pth"
    _, state = _random_ave_state("synctalk")
    flat = {k[len("audio_encoder."):]: v for k, v in state.items()}
    if case == "text":
        path.write_text("not a checkpoint")
        expect = "not a readable torch checkpoint"
    elif case == "other_model":
        torch.save({"net.weight": torch.zeros(3)}, path)
        expect = "not an ave checkpoint"
    elif case == "wrong_shapes":
        flat["0.conv_block.0.weight"] = torch.zeros(32, 1, 5, 5)
        torch.save(flat, path)
        expect = "does not match"
    else:
        del flat["3.conv_block.1.running_mean"]
        torch.save(flat, path)
        expect = "does not match"
    with pytest.raises(SyncTalkError, match=expect):
        compute_features("ave", np.zeros(SR, np.float32), 10, models_dir=tmp_path, progress=False)


def test_missing_weights_name_the_offline_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNCTALK_MODELS", raising=False)
    for asr in ("ave", "wenet"):
        with pytest.raises(SyncTalkError) as err:
            compute_features(asr, np.zeros(SR, np.float32), 10, models_dir=tmp_path, progress=False)
        msg = str(err.value)
        assert "--asr_model mel" in msg and f"synctalk models download {asr}" in msg and str(tmp_path) in msg


# ------------------------------------------------------------------------------------------------
# hubert


def test_hubert_chunks_join_exactly(tiny_models, speech):
    """With a model whose states depend only on nearby audio, overlapping chunks give the one-pass result."""
    fe, model = hubert.load_hubert(tiny_models)

    def local_only(x):
        feats = model.feature_extractor(x).transpose(1, 2)
        return types.SimpleNamespace(last_hidden_state=model.feature_projection(feats))

    n = 60
    audio = fit_audio(speech[: 3 * SR], n, hubert.RIGHT_CONTEXT)
    whole = hubert.extract(audio, n, fe, local_only, chunk_states=10**6)
    chunked = hubert.extract(audio, n, fe, local_only, chunk_states=14, context_states=3)
    assert whole.shape == (n, 2, 1024)
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    # the same as running the feature extractor and the model once over the whole clip
    values = torch.from_numpy(fe(audio, sampling_rate=SR, return_tensors="np").input_values)
    with torch.inference_mode():
        direct = local_only(values).last_hidden_state[0, : 2 * n].numpy().reshape(n, 2, 1024)
    np.testing.assert_allclose(whole, direct, atol=1e-4)
    # state t covers samples [320 t, 320 t + 400): frame i owns states 2i and 2i+1
    assert hubert.num_states(640 * n + 80) == 2 * n


def test_hubert_real_model_in_chunks_keeps_shape(tiny_models, speech):
    fe, model = hubert.load_hubert(tiny_models)
    n = 50
    audio = fit_audio(speech[: 2 * SR], n, hubert.RIGHT_CONTEXT)
    out = hubert.extract(audio, n, fe, model, chunk_states=30, context_states=10)
    assert out.shape == (n, 2, 1024) and np.isfinite(out).all()


def test_hubert_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNCTALK_MODELS", raising=False)
    monkeypatch.setattr(hubert, "DEFAULT_ID", "synctalk-test/no-such-hubert")
    with pytest.raises(SyncTalkError) as err:
        compute_features("hubert", np.zeros(SR, np.float32), 10, models_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert "synctalk-test/no-such-hubert" in msg and "--asr_model mel" in msg and str(tmp_path / "hubert") in msg


def test_hubert_of_the_wrong_width_is_refused(tmp_path):
    _save_tiny_hubert(tmp_path / "hubert", hidden=64)
    with pytest.raises(SyncTalkError, match="hidden size 64"):
        compute_features("hubert", np.zeros(SR, np.float32), 10, models_dir=tmp_path, progress=False)


# ------------------------------------------------------------------------------------------------
# wenet


def test_wenet_fbank_framing():
    audio = np.zeros(SR, np.float32)
    feats = wenet.log_fbank(audio)
    assert feats.shape == (1 + (SR - 400) // 160, 80)
    np.testing.assert_allclose(feats, np.log(np.finfo(np.float32).eps))  # silence sits on the floor
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32) * 0.5
    loud = wenet.log_fbank(tone)
    peak = loud.mean(0).argmax()
    assert 20 < peak < 60  # 1 kHz lands in the lower-middle of 80 mel bands up to 8 kHz
    # blocks join exactly: a long signal in blocks equals each block on its own
    noise = np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32) * 0.1
    full = wenet.log_fbank(noise)
    old = wenet._FBANK_BLOCK
    try:
        wenet._FBANK_BLOCK = 37
        np.testing.assert_allclose(wenet.log_fbank(noise), full, rtol=1e-5, atol=1e-4)
    finally:
        wenet._FBANK_BLOCK = old


def test_wenet_rejects_a_graph_with_other_inputs(tmp_path):
    _export_tiny_wenet(tmp_path / "wenet_encoder.onnx", input_names=("speech", "offset", "att_cache", "cnn_cache"))
    with pytest.raises(SyncTalkError, match="expected inputs chunk, offset, att_cache, cnn_cache"):
        compute_features("wenet", np.zeros(SR, np.float32), 10, models_dir=tmp_path, progress=False)
    (tmp_path / "wenet_encoder.onnx").write_bytes(b"garbage")
    with pytest.raises(SyncTalkError, match="not a loadable ONNX graph"):
        compute_features("wenet", np.zeros(SR, np.float32), 10, models_dir=tmp_path, progress=False)


# ------------------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize("bad, expect", [
    (dict(asr="no-such-model"), "unknown audio model"),
    (dict(audio=np.zeros((2, SR), np.float32)), "mono"),
    (dict(num_frames=0), "positive whole number"),
    (dict(num_frames=2.5), "positive whole number"),
    (dict(audio=np.full(SR, np.nan, np.float32)), "NaN"),
])
def test_bad_input_is_a_clear_error(bad, expect):
    kw = dict(asr="mel", audio=np.zeros(SR, np.float32), num_frames=10)
    kw.update(bad)
    with pytest.raises(SyncTalkError, match=expect):
        compute_features(kw["asr"], kw["audio"], kw["num_frames"], progress=False)


def test_audio_is_laid_on_its_timestamps_across_gaps_in_the_track(tmp_path):
    """Clips joined whose audio is a little shorter than their video (grid_s1_5min's 100 sentences:
    2 ms each) leave small gaps in the audio timestamps. The extracted samples keep them as silence,
    so the last clip's sound starts with its frames, at 8.0 s, not 80 ms early as when decoders butt
    the samples together."""
    import subprocess

    ff = media.ffmpeg_exe()
    parts = []
    for k in range(9):  # 1 s of frames, 0.99 s of sound each; the last one at 1000 Hz
        part = tmp_path / f"part{k}.mkv"
        hz = 1000 if k == 8 else 440
        subprocess.run([ff, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=32x32:r=25:d=1",
                        "-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate=16000:duration=0.99",
                        "-c:v", "mpeg4", "-c:a", "pcm_s16le", str(part)], check=True)
        parts.append(part)
    listing = tmp_path / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    joined = tmp_path / "joined.mkv"
    subprocess.run([ff, "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    str(joined)], check=True)
    wav = tmp_path / "aud.wav"
    media.extract_audio_wav(joined, wav)
    for audio in (media.load_audio(wav, SR), media.load_audio(joined, SR)):
        hop = SR // 100  # 10 ms: 100 Hz bins
        frames = audio[: audio.size // hop * hop].reshape(-1, hop)
        spec = np.abs(np.fft.rfft(frames, axis=1))
        loud = np.abs(frames).max(1) > 0.05
        high = loud & (spec[:, 9:12].sum(1) > spec[:, 3:6].sum(1))  # 1000 Hz over 440 Hz
        onset = int(np.nonzero(high)[0][0])
        assert 799 <= onset <= 802, onset / 100  # butted together: about 7.92 s
