"""whisper features: the real loading code (transformers and CTranslate2) on tiny random Whisper models
the tests make themselves, frame alignment, 30 s windows without seams, the networks on whisper windows."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import SPEECH_WAV
from synctalk.audio import whisper
from synctalk.audio.features import check_weights, compute_features, fit_audio
from synctalk.audio.registry import get_spec, network_audio_dim
from synctalk.errors import SyncTalkError

SR = 16000
D = 24  # the tiny test model's width


def save_tiny_whisper(dest, d_model: int = D, layers: int = 1, tokenizer: bool = False, n_mels: int = 80):
    """A random Whisper of width `d_model` in transformers' save_pretrained layout (30 s windows)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=d_model, encoder_layers=layers, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64,
                        num_mel_bins=n_mels, max_source_positions=1500, max_target_positions=32, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[],
                        begin_suppress_tokens=[])
    WhisperForConditionalGeneration(cfg).save_pretrained(dest)
    WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(dest)
    if tokenizer:  # the CTranslate2 converter reads a vocabulary from the folder
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(64)}, unk_token="t0"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0").save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny", tokenizer=True)


@pytest.fixture(scope="module")
def speech():
    audio, sr = sf.read(SPEECH_WAV, dtype="float32")
    assert sr == SR
    return audio if audio.ndim == 1 else audio.mean(1)


@pytest.fixture(autouse=True)
def _isolated_models(tmp_path, monkeypatch):
    # no models folder of the machine takes part
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNCTALK_MODELS", raising=False)


# ------------------------------------------------------------------------------------------------
# log-mel and framing


def test_log_mel_matches_the_feature_extractor(speech):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    clip = np.zeros(30 * SR, np.float32)
    clip[: min(speech.size, clip.size)] = speech[: clip.size]
    want = fe(clip, sampling_rate=SR, return_tensors="np").input_features[0]
    got = whisper.log_mel(clip, fe.mel_filters)
    assert got.shape == want.shape == (80, 3000)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # in STFT chunks (as long clips are) the same, to float rounding
    np.testing.assert_allclose(whisper.log_mel(clip, fe.mel_filters, chunk_frames=777), got, atol=1e-5)


def test_window_plan_covers_every_row_once_away_from_edges():
    for rows, phase in ((100, 0), (1500, 0), (3500, 0), (3500, 500), (9001, 999)):
        plan = whisper.window_plan(rows, 1500, 250, phase)
        kept = np.concatenate([np.arange(lo, hi) for _, lo, hi in plan])
        np.testing.assert_array_equal(kept, np.arange(rows))
        for start, lo, hi in plan:
            assert start >= 0 and hi <= start + 1500 - 250 and (lo == 0 or lo - start == 250)
        # the cross-fade weights of all windows add up to one on every row
        total = np.zeros(rows + 1500)
        for start, lo, hi in plan:
            total[start:start + 1500] += whisper._fade_weights(start, lo, hi, rows, 1500, 100)
        np.testing.assert_allclose(total[:rows], 1.0, atol=1e-6)


def test_rows_match_frames_and_come_from_the_named_model(tiny_dir, speech):
    n = 80  # 3.2 s of video
    feats = compute_features("whisper", speech[: 5 * SR], n, whisper_model=str(tiny_dir), progress=False)
    assert feats.shape == (n, 2, D) and feats.dtype == np.float32 and np.isfinite(feats).all()
    spec = get_spec("whisper").for_rows(feats.shape[1:])
    assert spec.frame_shape == (2, D) and spec.tensor_shape == (10, D)
    # a longer audio track changes no row: each frame's rows depend on the audio up to its right context
    longer = compute_features("whisper", speech[: 8 * SR], n, whisper_model=str(tiny_dir), progress=False)
    np.testing.assert_allclose(longer, feats, atol=1e-5)
    # alignment: a tone burst from frame 40 on (sample 25600) leaves states 0..78 as they were (state 79
    # sees the burst's first 40 samples through the STFT window and the convolutions' reach) and
    # changes state 80, frame 40's first, more. Both clips end loud: the clip-wide level is the same.
    k = np.arange(n * 640, dtype=np.float32)
    base = 1e-3 * np.sin(k * 0.05)
    base[70 * 640:] += 0.8 * np.sin(k[70 * 640:] * 0.2)
    burst = base.copy()
    burst[40 * 640: 60 * 640] += 0.3 * np.sin(k[40 * 640: 60 * 640] * 0.3)
    enc = whisper.load_whisper(str(tiny_dir))
    local_only(enc)
    a, b = (whisper.extract(fit_audio(x, n, whisper.RIGHT_CONTEXT), n, enc).reshape(2 * n, D) for x in (base, burst))
    change = np.abs(a - b).max(1)
    assert change[:79].max() < 1e-5 and change[80] > 0.1 and change[80] > change[79]


def local_only(enc):
    """Make a loaded encoder position-free and attention-free: each state depends only on the mel
    frames around it, so a windowed computation can be checked against a direct one."""
    with torch.no_grad():
        enc.module.embed_positions.weight.zero_()
        for layer in enc.module.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()


def _direct(enc, mel: np.ndarray) -> np.ndarray:
    """The local-only encoder over a whole mel of any length at once (no 30 s windows)."""
    m = enc.module
    with torch.inference_mode():
        x = torch.from_numpy(mel)[None]
        x = torch.nn.functional.gelu(m.conv2(torch.nn.functional.gelu(m.conv1(x)))).permute(0, 2, 1)
        for layer in m.layers:  # attention adds nothing (out_proj is zero): the feed-forward half
            x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
        return m.layer_norm(x)[0].numpy()


def test_70_s_in_windows_equals_one_direct_pass(tiny_dir, speech):
    """70 s (three joins) in 30 s windows with cross-fades gives the states of one pass over the clip."""
    enc = whisper.load_whisper(str(tiny_dir))
    local_only(enc)
    n = 70 * 25
    audio = fit_audio(np.tile(speech, 2)[: 70 * SR], n, whisper.RIGHT_CONTEXT)
    windowed = whisper.extract(audio, n, enc)
    plan = whisper.window_plan(2 * n, 1500, whisper.CONTEXT_ROWS)
    assert len(plan) == 4
    padded = np.zeros(max(audio.size, (plan[-1][0] + 1500) * 320), np.float32)
    padded[: audio.size] = audio
    mel = whisper.log_mel(padded, enc.mel_filters)
    floor = max(float(mel.max()) - 2.0, -1.5)
    direct = _direct(enc, mel) - _direct(enc, np.full_like(mel, floor))
    np.testing.assert_allclose(windowed.reshape(2 * n, D), direct[: 2 * n], atol=1e-4)
    # and moving the joins changes nothing
    moved = whisper.extract(audio, n, enc, phase=400)
    np.testing.assert_allclose(moved, windowed, atol=1e-4)


def test_no_jump_at_the_joins_with_the_full_model(tiny_dir, speech):
    """With attention and positions on, the cross-fade leaves no step at a join larger than the
    clip's own largest row-to-row steps."""
    enc = whisper.load_whisper(str(tiny_dir))
    n = 45 * 25
    audio = fit_audio(np.tile(speech, 2)[: 45 * SR], n, whisper.RIGHT_CONTEXT)
    rows = whisper.extract(audio, n, enc).reshape(2 * n, D)
    joins = [lo for _, lo, _ in whisper.window_plan(2 * n, 1500, whisper.CONTEXT_ROWS)[1:]]
    step = np.linalg.norm(np.diff(rows, axis=0), axis=1)
    assert joins and max(step[j - 1] for j in joins) <= np.percentile(step, 99)


# ------------------------------------------------------------------------------------------------
# where the model comes from


def test_models_folder_and_explicit_model(tmp_path, tiny_dir, speech):
    import shutil

    shutil.copytree(tiny_dir, tmp_path / "models" / "whisper")
    src = whisper.locate(None, tmp_path / "models")
    assert src.kind == "transformers" and src.is_folder and src.where == str((tmp_path / "models" / "whisper").resolve())
    via_folder = compute_features("whisper", speech[: 2 * SR], 25, models_dir=tmp_path / "models", progress=False)
    direct = compute_features("whisper", speech[: 2 * SR], 25, whisper_model=tiny_dir, progress=False)
    np.testing.assert_allclose(via_folder, direct, atol=1e-6)
    # an explicit id or folder wins over the models folder
    assert whisper.locate("openai/whisper-base", tmp_path / "models").where == "openai/whisper-base"
    # a whisper/ folder without a model is an error, not a reason to use another model
    (tmp_path / "other" / "whisper").mkdir(parents=True)
    with pytest.raises(SyncTalkError, match="not a whisper model folder"):
        check_weights("whisper", tmp_path / "other")


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(whisper, "DEFAULT_ID", "synctalk-test/no-such-whisper")
    for call in (lambda: check_weights("whisper", tmp_path),
                 lambda: compute_features("whisper", np.zeros(SR, np.float32), 10, models_dir=tmp_path, progress=False)):
        with pytest.raises(SyncTalkError) as err:
            call()
        msg = str(err.value)
        assert "synctalk-test/no-such-whisper" in msg and "--asr_model mel" in msg
        assert str(tmp_path / "whisper") in msg and "--whisper_model" in msg
    with pytest.raises(SyncTalkError, match="no such folder.*\n.*--asr_model mel"):
        check_weights("whisper", whisper_model=str(tmp_path / "nowhere" / "whisper-small"))
    (tmp_path / "junk").mkdir()
    with pytest.raises(SyncTalkError, match="not a whisper model folder"):
        compute_features("whisper", np.zeros(SR, np.float32), 10, whisper_model=str(tmp_path / "junk"), progress=False)


def test_download_into_the_models_folder(tmp_path, monkeypatch, tiny_dir):
    import transformers

    # the hub stands in for the tiny model's folder; what is written and where is the real code
    for cls in (transformers.WhisperModel, transformers.WhisperFeatureExtractor):
        real = cls.from_pretrained.__func__
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda c, _id, real=real, **kw: real(c, tiny_dir, **kw)))
    where = whisper.download_whisper(tmp_path / "models", progress=False)
    assert where == str(tmp_path / "models" / "whisper")
    assert whisper.locate(None, tmp_path / "models").kind == "transformers"
    assert not (tmp_path / "models" / ".whisper.partial").exists()


def test_download_without_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(whisper, "DEFAULT_ID", "synctalk-test/no-such-whisper")
    with pytest.raises(SyncTalkError, match="download failed(.|\n)*--asr_model mel"):
        whisper.download_whisper(tmp_path, progress=False)
    assert not (tmp_path / "whisper").exists()


def test_ctranslate2_folder_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "ct2").mkdir()
    (tmp_path / "ct2" / "config.json").write_text("{}")
    (tmp_path / "ct2" / "model.bin").write_bytes(b"\0")
    assert whisper.folder_kind(tmp_path / "ct2") == "ctranslate2"
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import fails
    with pytest.raises(SyncTalkError, match="pip install ctranslate2"):
        check_weights("whisper", whisper_model=str(tmp_path / "ct2"))


def test_ctranslate2_encoder_matches_transformers(tmp_path, tiny_dir, speech):
    ct2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    out = ct2.converters.TransformersConverter(str(tiny_dir)).convert(str(tmp_path / "ct2"), force=True)
    assert whisper.folder_kind(out) == "ctranslate2"
    a = whisper.load_whisper(str(tiny_dir))
    b = whisper.load_whisper(out)
    assert b.source.kind == "ctranslate2" and b.n_mels == 80 and b.window_frames == 3000
    clip = np.zeros(30 * SR, np.float32)
    clip[: min(speech.size, clip.size)] = speech[: clip.size]
    mel = whisper.log_mel(clip, a.mel_filters)[None]
    np.testing.assert_allclose(b.encode(mel), a.encode(mel), atol=1e-4)
    n = 50
    fa = compute_features("whisper", speech[: 3 * SR], n, whisper_model=str(tiny_dir), progress=False)
    fb = compute_features("whisper", speech[: 3 * SR], n, whisper_model=out, progress=False)
    np.testing.assert_allclose(fb, fa, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# the networks on whisper windows of the model's own width


def test_unet_and_syncnet_take_windows_of_the_features_width(tiny_dir, speech):
    from unet_328 import SyncNet, build_unet

    n = 30
    feats = compute_features("whisper", speech[: 2 * SR], n, whisper_model=str(tiny_dir), progress=False)
    spec = get_spec("whisper").for_rows(feats.shape[1:])
    idx = torch.tensor([0, 7, n - 1])
    audio = spec.batch_windows(torch.from_numpy(feats), idx)
    assert audio.shape == (3, 10, D)
    np.testing.assert_array_equal(audio[1].numpy(), spec.window_tensor(feats, 7))
    assert network_audio_dim("whisper", feats.shape[1:]) == D and network_audio_dim("hubert", (2, 1024)) is None
    unet = build_unet("whisper", "tiny", audio_dim=network_audio_dim("whisper", feats.shape[1:])).eval()
    assert unet.config == {"asr": "whisper", "width": "tiny", "audio_dim": D}
    with torch.no_grad():
        out = unet(torch.rand(3, 6, 320, 320), audio)
    assert out.shape == (3, 3, 320, 320) and torch.isfinite(out).all()
    # the config rebuilds the same network, and its weights load into it
    again = build_unet(**unet.config)
    again.load_state_dict(unet.state_dict())
    sync = SyncNet("whisper", "tiny", audio_dim=D).eval()
    assert sync.config["audio_dim"] == D
    with torch.no_grad():
        a, v = sync(torch.rand(3, 3, 320, 320), audio)
    assert a.shape == v.shape == (3, 512)
    # a network of another width refuses these windows with a clear message
    with pytest.raises(SyncTalkError, match="whisper"):
        build_unet("whisper", "tiny")(torch.rand(3, 6, 320, 320), audio)
    with pytest.raises(SyncTalkError, match="rows of shape"):
        get_spec("hubert").for_rows(feats.shape[1:], "aud_whisper.npy")


def test_preprocess_takes_and_records_the_model(tiny_dir):
    import argparse

    from synctalk import preprocess

    parser = argparse.ArgumentParser()
    preprocess.add_arguments(parser)
    args = parser.parse_args(["--video_path", "v.mp4", "--name", "n", "--asr_model", "whisper",
                              "--whisper_model", str(tiny_dir)])
    opts = preprocess.options_from_args(args)
    assert opts.whisper_model == str(tiny_dir)
    # what the state file keeps: the absolute folder, usable from any working folder
    assert preprocess._whisper_source(opts) == str(tiny_dir.resolve())


def test_128_bin_model_without_preprocessor_config(tmp_path, speech):
    """large-v3 takes 128 mel bins: a folder without preprocessor_config.json gets them from the model."""
    dest = save_tiny_whisper(tmp_path / "v3", d_model=16, n_mels=128)
    (dest / "preprocessor_config.json").unlink()
    enc = whisper.load_whisper(str(dest))
    assert enc.n_mels == 128 and enc.mel_filters.shape == (201, 128)
    feats = compute_features("whisper", speech[: 2 * SR], 25, whisper_model=str(dest), progress=False)
    assert feats.shape == (25, 2, 16) and np.isfinite(feats).all()


def test_a_dataset_of_any_whisper_width_trains_and_renders_with_networks_of_that_width(tmp_path) -> None:
    """Features (N, 2, 24): the data, the UNet and the SyncNet all take their width from the file."""
    import numpy as np
    import torch

    from synctalk.data import FrameData, feature_audio_dim
    from synctalk.layout import dataset_layout
    from unet_328 import SyncNet, build_unet

    layout = dataset_layout(tmp_path, "w")
    layout.root.mkdir(parents=True)
    feats = np.random.default_rng(0).standard_normal((12, 2, 24)).astype(np.float32)
    np.save(layout.features("whisper"), feats)
    dim = feature_audio_dim(layout, "whisper")
    assert dim == 24 and feature_audio_dim(layout, "mel") is None
    data = FrameData(torch.zeros(12, 320, 320, 3, dtype=torch.uint8), feats, "whisper")
    audio = data.audio(torch.tensor([0, 5, 11]))
    unet = build_unet("whisper", "tiny", dim).eval()
    assert unet.config["audio_dim"] == 24
    with torch.no_grad():
        out = unet(torch.zeros(3, 6, 320, 320), audio)
        a, f = SyncNet("whisper", "tiny", audio_dim=dim).eval()(torch.zeros(3, 3, 320, 320), audio)
    assert out.shape == (3, 3, 320, 320) and a.shape == f.shape == (3, 512)
