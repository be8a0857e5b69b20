"""Model files: where they are looked for, the missing-file error, and downloads against a local server."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from conftest import MODELS
from synctalk import weights
from synctalk.cli import main as cli_main
from synctalk.errors import SyncTalkError


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """No test sees the real user cache or $SYNCTALK_MODELS."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SYNCTALK_MODELS", raising=False)


def test_search_order(tmp_path, monkeypatch):
    assert weights.search_dirs() == [tmp_path / "xdg" / "synctalk" / "models"]
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path / "env"))
    assert weights.search_dirs(tmp_path / "mine") == [tmp_path / "mine", tmp_path / "env",
                                                       tmp_path / "xdg" / "synctalk" / "models"]
    # the first folder holding the file wins
    for d in ("env", "xdg/synctalk/models"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "audio_visual_encoder.pth").write_bytes(b"x")
    assert weights.resolve_model_file("ave", tmp_path / "mine") == tmp_path / "env" / "audio_visual_encoder.pth"


def test_shared_models_resolve_and_match_the_manifest():
    for name in ("scrfd", "pfld_mean_face"):
        path = weights.resolve_model_file(name, MODELS)
        entry = weights.MANIFEST[name]
        assert path.parent == MODELS
        assert path.stat().st_size == entry.size and weights.sha256_of(path) == entry.sha256


def test_upstream_file_names_are_accepted(tmp_path):
    (tmp_path / "mean_face.txt").write_text("0.1 0.2")
    (tmp_path / "encoder.onnx").write_bytes(b"x")
    assert weights.resolve_model_file("pfld_mean_face", tmp_path).name == "mean_face.txt"
    assert weights.resolve_model_file("wenet", tmp_path).name == "encoder.onnx"


def test_torchvision_cache_is_used_for_vgg19(tmp_path):
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "vgg19-dcbb9e9d.pth").write_bytes(b"x")
    assert weights.resolve_model_file("vgg19") == hub / "vgg19-dcbb9e9d.pth"


@pytest.mark.parametrize("name, alternative", [("pfld", "--landmarker dlib"), ("vgg19", "--perceptual none"),
                                               ("ave", "--asr_model mel"), ("wenet", "--asr_model mel")])
def test_missing_file_error_says_everything(tmp_path, name, alternative):
    with pytest.raises(SyncTalkError) as err:
        weights.resolve_model_file(name, tmp_path / "mine")
    msg = str(err.value)
    assert repr(name) in msg and alternative in msg and f"synctalk models download {name}" in msg
    for path in weights.candidate_paths(name, tmp_path / "mine"):
        assert str(path) in msg


def test_incomplete_copy_of_a_known_file_is_refused(tmp_path):
    (tmp_path / "scrfd_2.5g_kps.onnx").write_bytes(b"half")
    with pytest.raises(SyncTalkError, match="incomplete copy"):
        weights.resolve_model_file("scrfd", tmp_path)


def test_unknown_model_name():
    with pytest.raises(SyncTalkError, match="known models are"):
        weights.resolve_model_file("nope")


# ------------------------------------------------------------------------------------------------
# downloads from a local HTTP server

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class _Server:
    """Serves PAYLOAD at /model.bin with Range support; `mode` makes it misbehave on purpose."""

    def __init__(self):
        self.mode = "ok"
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server.ranges.append(self.headers.get("Range"))
                if server.mode == "html":
                    body = b"<html>sign in</html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.mode != "no_range":
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "half":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.bin"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _entry(monkeypatch, url, sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD), name="testmodel"):
    entry = weights.ModelFile(name=name, filename="model.bin", url=url, size=size, sha256=sha256,
                              description="a test file", offline_alternative="--test_alternative")
    monkeypatch.setitem(weights.MANIFEST, name, entry)
    return entry


def test_download_good_file(tmp_path, server, monkeypatch, capsys):
    _entry(monkeypatch, server.url)
    path = weights.download("testmodel", tmp_path, progress=False)
    assert path == tmp_path / "model.bin" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.bin.part").exists()
    assert "sha256 verified" in capsys.readouterr().err
    # already there and verified: no second request
    weights.download("testmodel", tmp_path, progress=False)
    assert len(server.ranges) == 1
    assert weights.resolve_model_file("testmodel", tmp_path) == path


def test_checksum_mismatch_leaves_no_file(tmp_path, server, monkeypatch):
    _entry(monkeypatch, server.url, sha256="0" * 64)
    with pytest.raises(SyncTalkError, match="sha256"):
        weights.download("testmodel", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_leaves_no_file(tmp_path, server, monkeypatch):
    _entry(monkeypatch, server.url, size=len(PAYLOAD) + 1, sha256=None)
    with pytest.raises(SyncTalkError, match="bytes, expected"):
        weights.download("testmodel", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes(tmp_path, server, monkeypatch):
    _entry(monkeypatch, server.url)
    server.mode = "half"
    with pytest.raises(SyncTalkError, match="run `synctalk models download testmodel` again to resume"):
        weights.download("testmodel", tmp_path, progress=False)
    part = tmp_path / "model.bin.part"
    assert part.stat().st_size == len(PAYLOAD) // 2 and not (tmp_path / "model.bin").exists()
    server.mode = "ok"
    path = weights.download("testmodel", tmp_path, progress=False)
    assert server.ranges[-1] == f"bytes={len(PAYLOAD) // 2}-"
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_server_without_range_support_restarts(tmp_path, server, monkeypatch):
    _entry(monkeypatch, server.url)
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD[:1000])
    server.mode = "no_range"
    assert weights.download("testmodel", tmp_path, progress=False).read_bytes() == PAYLOAD


def test_unverifiable_file_says_so(tmp_path, server, monkeypatch, capsys):
    _entry(monkeypatch, server.url, sha256=None, size=None)
    weights.download("testmodel", tmp_path, progress=False)
    err = capsys.readouterr().err
    assert "cannot verify a checksum" in err and hashlib.sha256(PAYLOAD).hexdigest() in err


def test_web_page_instead_of_the_file(tmp_path, server, monkeypatch):
    _entry(monkeypatch, server.url)
    server.mode = "html"
    with pytest.raises(SyncTalkError, match="web page"):
        weights.download("testmodel", tmp_path, progress=False)
    assert not (tmp_path / "model.bin").exists()


def test_unreachable_server_names_the_alternative(tmp_path, monkeypatch):
    _entry(monkeypatch, "http://127.0.0.1:9/model.bin")  # the discard port: nothing listens
    with pytest.raises(SyncTalkError, match="--test_alternative"):
        weights.download("testmodel", tmp_path, progress=False)


# ------------------------------------------------------------------------------------------------
# the command


def test_models_list_command(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps long paths at 80 columns when not on a terminal
    assert cli_main(["models", "list", "--models_dir", str(MODELS)]) == 0
    out = capsys.readouterr().out
    for name in ("scrfd", "pfld", "ave", "wenet", "vgg19", "hubert"):
        assert name in out
    assert "scrfd_2.5g_kps.onnx" in out and "--perceptual none" in out
    rows = {r[0]: r for r in weights.model_rows(MODELS)}
    assert rows["scrfd"][1] and rows["pfld_mean_face"][1] and not rows["pfld"][1]


def test_models_download_command(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setitem(weights.MANIFEST, "scrfd", weights.ModelFile(
        name="scrfd", filename="scrfd_test.onnx", url=server.url, size=len(PAYLOAD),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(), description="d", offline_alternative="none"))
    assert cli_main(["models", "download", "scrfd", "--models_dir", str(tmp_path), "--no_progress"]) == 0
    assert (tmp_path / "scrfd_test.onnx").read_bytes() == PAYLOAD
    assert str(tmp_path / "scrfd_test.onnx") in capsys.readouterr().out
