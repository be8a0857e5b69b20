"""Model files: where they are looked for, the missing-file error, and downloads against a local server."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from conftest import MODELS
from synctalk import models_command, weights
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
        self.paths: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server.ranges.append(self.headers.get("Range"))
                server.paths.append(self.path)
                if self.path != "/model.bin":
                    self.send_error(404)
                    return
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
                if server.mode == "tampered":
                    body = bytes([body[0] ^ 1]) + body[1:]  # same size, one bit changed
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
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.base}/model.bin"
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


def _entry(monkeypatch, url, sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD), name="testmodel",
           git_blob=None):
    urls = (url,) if isinstance(url, str) else tuple(url)
    entry = weights.ModelFile(name=name, filename="model.bin", urls=urls, size=size, sha256=sha256,
                              git_blob=git_blob, description="a test file", offline_alternative="--test_alternative")
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
    rows = {r[0]: r for r in models_command.model_rows(MODELS)}
    assert rows["scrfd"][1] and rows["pfld_mean_face"][1] and not rows["pfld"][1]


def test_models_download_command(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setitem(weights.MANIFEST, "scrfd", weights.ModelFile(
        name="scrfd", filename="scrfd_test.onnx", urls=(server.url,), size=len(PAYLOAD),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(), description="d", offline_alternative="none"))
    assert cli_main(["models", "download", "scrfd", "--models_dir", str(tmp_path), "--no_progress"]) == 0
    assert (tmp_path / "scrfd_test.onnx").read_bytes() == PAYLOAD
    assert str(tmp_path / "scrfd_test.onnx") in capsys.readouterr().out


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_git_blob_id_matches_git(tmp_path):
    # `printf 'hello\n' | git hash-object --stdin` prints this id
    (tmp_path / "f").write_bytes(b"hello\n")
    assert weights.git_blob_id_of(tmp_path / "f") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_download_verified_by_git_blob_id(tmp_path, server, monkeypatch, capsys):
    _entry(monkeypatch, server.url, sha256=None, size=None, git_blob=_git_blob(PAYLOAD))
    assert weights.download("testmodel", tmp_path, progress=False).read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert "git blob id" in err and "verified" in err


@pytest.mark.parametrize("check", ["sha256", "git_blob"])
def test_tampered_file_is_refused_and_nothing_kept(tmp_path, server, monkeypatch, check):
    digests = {"sha256": hashlib.sha256(PAYLOAD).hexdigest(), "git_blob": None} if check == "sha256" else \
        {"sha256": None, "git_blob": _git_blob(PAYLOAD)}
    _entry(monkeypatch, server.url, **digests)
    server.mode = "tampered"
    with pytest.raises(SyncTalkError, match="sha256" if check == "sha256" else "git blob id") as err:
        weights.download("testmodel", tmp_path, progress=False)
    assert "removed" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_mirror_fallback_when_the_first_address_fails(tmp_path, server, monkeypatch, capsys):
    # a dead port, then a 404, then the good copy
    _entry(monkeypatch, ["http://127.0.0.1:9/model.bin", f"{server.base}/missing/model.bin", server.url])
    assert weights.download("testmodel", tmp_path, progress=False).read_bytes() == PAYLOAD
    assert server.paths == ["/missing/model.bin", "/model.bin"]
    assert "sha256 verified" in capsys.readouterr().err


def test_every_mirror_failing_lists_each_address(tmp_path, server, monkeypatch):
    urls = ["http://127.0.0.1:9/model.bin", f"{server.base}/missing/model.bin"]
    _entry(monkeypatch, urls)
    with pytest.raises(SyncTalkError) as err:
        weights.download("testmodel", tmp_path, progress=False)
    msg = str(err.value)
    assert all(u in msg for u in urls) and "HTTP 404" in msg and "--test_alternative" in msg
    assert list(tmp_path.iterdir()) == []


def test_a_tampered_mirror_falls_through_to_a_good_one(tmp_path, server, monkeypatch):
    # the second server answers every path with a one-bit-changed copy
    bad = _Server()
    bad.mode = "tampered"
    try:
        _entry(monkeypatch, [bad.url, server.url])
        assert weights.download("testmodel", tmp_path, progress=False).read_bytes() == PAYLOAD
        assert bad.paths == ["/model.bin"] and server.paths == ["/model.bin"]
    finally:
        bad.close()


def test_manifest_addresses_and_digests():
    """Every entry has addresses, and the SyncTalk_2D files carry the public tree's digests."""
    m = weights.MANIFEST
    for entry in m.values():
        assert entry.urls and all(u.startswith("https://") for u in entry.urls)
    assert m["pfld"].git_blob == "a1652fd38853cf58cd3ceac717bb5deb34f679d7"
    assert m["ave"].git_blob == "9fe9b655c3f952f26f0353a468ab33ff78c0bdf3"
    assert any(u.endswith("/model/checkpoints/audio_visual_encoder.pth") for u in m["ave"].urls)
    assert any(u.endswith("/data_utils/ave/checkpoints/audio_encoder.pth") for u in m["ave"].urls)
    assert not any("nerf_triplane" in u for e in m.values() for u in e.urls)
    assert all(u.endswith("/data_utils/scrfd_2.5g_kps.onnx") for u in m["scrfd"].urls)
    assert all(u.endswith("/data_utils/checkpoint_epoch_335.pth.tar") for u in m["pfld"].urls)
    assert (m["scrfd"].size, m["scrfd"].sha256) == (
        3291017, "32d20c77b9e2dc1d07e94c2ab9d25bdd5cd05eddbe0b46e7b38e7a1eca22e99a")
    assert len(m["scrfd"].urls) > 1  # mirrors


def test_weights_does_not_import_the_audio_models():
    """The import cycle audio.hubert <-> weights stays broken: weights needs nothing of the audio side."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(weights))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any("audio" in mod for mod in imported)
