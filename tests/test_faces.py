"""Face stage on real fixture frames: SCRFD, dlib and PFLD landmarks, crop boxes, smoothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from synctalk.errors import SyncTalkError
from synctalk.faces.crop import crop_boxes_from_landmarks, crop_frame, smooth_boxes
from synctalk.faces.detector import FaceDetector, box_iou, pick_face
from synctalk.faces.landmarks import create_landmarker, load_mean_face, pfld_square_box
from synctalk.faces.pipeline import FaceLandmarkPipeline
from synctalk.faces.topology import get_topology

from conftest import MODELS, VIDEOS

SCRFD = MODELS / "scrfd_2.5g_kps.onnx"
MEAN_FACE = MODELS / "pfld_mean_face.txt"


def read_frames(name: str, indices: list[int]) -> list[np.ndarray]:
    """Decode the given frame indices of a fixture video (sequential read, no seeking)."""
    cap = cv2.VideoCapture(str(VIDEOS / name))
    wanted, frames, i = set(indices), {}, 0
    while len(frames) < len(wanted):
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            frames[i] = frame
        i += 1
    cap.release()
    assert len(frames) == len(wanted), f"could not decode frames {indices} of {name}"
    return [frames[i] for i in indices]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(SCRFD, device="cpu")


@pytest.fixture(scope="module")
def dlib_landmarker():
    return create_landmarker("dlib")


@pytest.fixture(scope="module")
def sun_frames() -> list[np.ndarray]:
    return read_frames("sun.mp4", list(range(0, 8)))


@pytest.fixture(scope="module")
def pfld_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised PFLD saved in the original checkpoint format."""
    from pfld.model import build_pfld

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pfld") / "checkpoint_epoch_1.pth.tar"
    torch.save({"pfld_backbone": build_pfld().state_dict(), "epoch": 1}, path)
    return path


# -- detector ----------------------------------------------------------------------------------


@pytest.mark.parametrize("video", ["sun.mp4", "clip2.mp4", "clip3.mp4", "clip5.mp4"])
def test_scrfd_finds_exactly_one_face(detector: FaceDetector, video: str) -> None:
    for frame in read_frames(video, [0, 40, 90]):
        h, w = frame.shape[:2]
        dets = detector.detect(frame)
        assert len(dets) == 1, f"{video}: {len(dets)} faces"
        d = dets[0]
        assert d.score > 0.6
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        # a talking head: the face is a sizeable part of the frame
        assert 0.1 * min(h, w) < d.width < 0.9 * w
        # eyes, nose and mouth corners inside the box, eyes above the mouth
        assert np.all((d.kps[:, 0] > x1) & (d.kps[:, 0] < x2) & (d.kps[:, 1] > y1) & (d.kps[:, 1] < y2))
        assert d.kps[:2, 1].max() < d.kps[3:, 1].min()


def test_scrfd_runs_non_square_frames_without_letterbox_padding(detector: FaceDetector, sun_frames) -> None:
    """sun.mp4 is 576x768: a 480x640 pass finds the same face as the reference's padded 640x640 pass."""
    assert detector.dynamic and detector.input_hw_for((768, 576)) == (640, 480)
    frame = sun_frames[0]
    fitted = detector.detect(frame)[0]
    square = FaceDetector(SCRFD)
    square.dynamic = False  # behave like the fixed-size export
    padded = square.detect(frame)[0]
    np.testing.assert_allclose(fitted.box, padded.box, atol=1.0)
    np.testing.assert_allclose(fitted.kps, padded.kps, atol=1.0)


def test_blank_image_gives_no_detection(detector: FaceDetector, dlib_landmarker) -> None:
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector.detect(np.full((300, 300, 3), 180, np.uint8)) == []
    pipe = FaceLandmarkPipeline(detector, dlib_landmarker)
    lms, found = pipe.process([np.zeros((240, 320, 3), np.uint8)])
    assert lms.shape == (1, 68, 2) and found.tolist() == [False]
    assert np.isnan(lms).all()


class _CountingDetector:
    """The detector, counting the frames it is asked to look at."""

    def __init__(self, detector: FaceDetector) -> None:
        self.inner, self.calls = detector, 0

    def detect(self, img: np.ndarray):
        self.calls += 1
        return self.inner.detect(img)


def test_detecting_every_nth_frame_interpolates_boxes_and_checks_where_the_face_comes_or_goes(
        detector: FaceDetector, dlib_landmarker, sun_frames) -> None:
    dense, _ = FaceLandmarkPipeline(detector, dlib_landmarker).process(sun_frames)
    counting = _CountingDetector(detector)
    lms, found = FaceLandmarkPipeline(counting, dlib_landmarker, detect_every=4).process(sun_frames)
    assert counting.calls == 3  # frames 0, 4 and the batch's last (7)
    assert found.all()
    assert np.abs(lms - dense).max() < 3.0  # pixels, on 576x768 frames
    # the face leaves after frame 2: the stretch 1-3 is detected frame by frame, 5-6 has no face
    blank = np.zeros_like(sun_frames[0])
    counting.calls = 0
    frames = sun_frames[:3] + [blank] * 5
    lms, found = FaceLandmarkPipeline(counting, dlib_landmarker, detect_every=4).process(frames)
    assert found.tolist() == [True, True, True, False, False, False, False, False]
    assert counting.calls == 3 + 3
    assert np.isnan(lms[3:]).all() and not np.isnan(lms[:3]).any()
    with pytest.raises(ValueError):
        FaceLandmarkPipeline(detector, dlib_landmarker, detect_every=0)


def test_pick_face_prefers_previous_track_then_largest() -> None:
    from synctalk.faces.detector import Detection

    small = Detection(np.array([0, 0, 50, 50], np.float32), 0.9)
    big = Detection(np.array([100, 100, 300, 300], np.float32), 0.8)
    weak_big = Detection(np.array([0, 0, 400, 400], np.float32), 0.2)
    assert pick_face([small, big, weak_big]) is big
    assert pick_face([small, big], previous_box=np.array([2, 2, 48, 52])) is small
    assert pick_face([]) is None


# -- dlib landmarks ---------------------------------------------------------------------------


def test_dlib_landmarks_on_real_face(detector: FaceDetector, dlib_landmarker, sun_frames) -> None:
    topo = dlib_landmarker.topology
    assert topo.name == "dlib68" and topo.num_points == 68
    pipe = FaceLandmarkPipeline(detector, dlib_landmarker)
    lms, found = pipe.process(sun_frames)
    assert found.all() and lms.shape == (len(sun_frames), 68, 2) and lms.dtype == np.float32

    box = detector.detect(sun_frames[0])[0].box
    mouth = lms[0, list(topo.mouth_outer)]
    assert np.all((mouth[:, 0] > box[0]) & (mouth[:, 0] < box[2]) & (mouth[:, 1] > box[1]) & (mouth[:, 1] < box[3]))
    # the mouth sits on the face: below the eyes, above the chin, between the jaw's sides
    eyes_y = lms[0, 36:48, 1].mean()
    assert eyes_y < mouth[:, 1].min() and mouth[:, 1].max() < lms[0, 8, 1]
    assert lms[0, 2, 0] < mouth[:, 0].min() and mouth[:, 0].max() < lms[0, 14, 0]

    h, w = sun_frames[0].shape[:2]
    boxes = crop_boxes_from_landmarks(lms, topo, (h, w))
    assert boxes.dtype == np.int32 and boxes.shape == (len(sun_frames), 4)
    side = boxes[:, 2] - boxes[:, 0]
    assert np.all(side == boxes[:, 3] - boxes[:, 1]) and np.all(side > 50)
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= w) and np.all(boxes[:, 3] <= h)
    # consecutive frames of a talking head: the crop box barely moves
    ious = [box_iou(boxes[i], boxes[i + 1])[0, 0] for i in range(len(boxes) - 1)]
    assert min(ious) > 0.85, ious
    # the crop holds the mouth
    assert np.all((mouth[:, 0] > boxes[0, 0]) & (mouth[:, 0] < boxes[0, 2]))
    assert np.all((mouth[:, 1] > boxes[0, 1]) & (mouth[:, 1] < boxes[0, 3]))

    ap = topo.mouth_aperture(lms)
    assert ap.shape == (len(sun_frames),) and np.all(np.isfinite(ap)) and np.all(ap >= 0) and np.all(ap < 0.5)


def test_dlib_and_pfld_crop_rules_agree_on_real_faces(detector: FaceDetector, dlib_landmarker) -> None:
    """The 110-point mean face fitted onto dlib landmarks gives nearly the dlib-rule crop box."""
    mean = load_mean_face(MEAN_FACE).reshape(110, 2)
    pf, dl = get_topology("pfld110"), get_topology("dlib68")

    def anchors110(m):  # eye centres, nose tip, mouth corners, chin
        return np.array([m[66:74].mean(0), m[78:86].mean(0), m[51], m[90], m[96], m[16]])

    def anchors68(m):
        return np.array([m[36:42].mean(0), m[42:48].mean(0), m[30], m[48], m[54], m[8]])

    ious = []
    for video in ["sun.mp4", "clip2.mp4", "clip5.mp4"]:
        frame = read_frames(video, [10])[0]
        hw = frame.shape[:2]
        lms68 = dlib_landmarker([frame], detector.detect(frame)[0].box[None])[0]
        src, dst = anchors110(mean), anchors68(lms68)
        a, b = src - src.mean(0), dst - dst.mean(0)
        u, _, vt = np.linalg.svd(a.T @ b)
        rot = (u @ vt).T
        scale = np.trace((a @ rot.T).T @ b) / np.sum(a * a)
        lms110 = scale * (mean - src.mean(0)) @ rot.T + dst.mean(0)
        box_d = crop_boxes_from_landmarks(lms68[None], dl, hw)[0]
        box_p = crop_boxes_from_landmarks(lms110[None], pf, hw)[0]
        ious.append(box_iou(box_d, box_p)[0, 0])
    assert min(ious) > 0.7, ious


# -- PFLD --------------------------------------------------------------------------------------


def test_pfld_state_dict_uses_checkpoint_key_names() -> None:
    from pfld.model import build_pfld

    sd = build_pfld().state_dict()
    for key in [
        "conv1.rbr_conv.5.bn.running_var",
        "conv1.rbr_scale.conv.weight",
        "conv2.rbr_skip.num_batches_tracked",
        "conv3_1.ghost_conv.0.primary_conv.rbr_conv.0.conv.weight",
        "conv3_1.ghost_conv.1.rbr_scale.bn.bias",
        "conv5_4.ghost_conv.2.cheap_operation.rbr_skip.weight",
        "conv7.rbr_conv.0.conv.weight",
        "conv8.0.weight",
        "localization.3.bias",
    ]:
        assert key in sd, key
    assert "conv3_2.ghost_conv.1.rbr_scale.conv.weight" not in sd  # stride-1 bottlenecks have no middle block
    assert tuple(sd["conv_out.weight"].shape) == (220, 256, 1, 1)
    assert tuple(sd["conv8.0.weight"].shape) == (64, 16, 12, 12)


def test_pfld_reparameterize_keeps_outputs() -> None:
    from pfld.model import build_pfld

    torch.manual_seed(1)
    model = build_pfld(num_points=110).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics, so folding is exercised
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 0.5)
                m.bias.uniform_(-0.1, 0.1)
        x = torch.rand(2, 3, 192, 192)
        before = model(x)
        after = model.reparameterize()(x)
    assert not any(".rbr_conv." in k for k in model.state_dict())
    torch.testing.assert_close(after, before, rtol=1e-3, atol=1e-3 * before.abs().max().item())
    # a checkpoint saved after folding loads into the folded architecture
    from synctalk.faces.landmarks import build_pfld_from_state

    reloaded = build_pfld_from_state(model.state_dict()).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), after)


def test_pfld_random_checkpoint_runs_on_real_face(detector: FaceDetector, pfld_checkpoint: Path, sun_frames) -> None:
    lm = create_landmarker("pfld", device="cpu", checkpoint_path=pfld_checkpoint, mean_face_path=MEAN_FACE)
    assert lm.topology.name == "pfld110"
    frame = sun_frames[0]
    box = detector.detect(frame)[0].box
    pts = lm([frame], box[None])
    assert pts.shape == (1, 110, 2) and pts.dtype == np.float32 and np.isfinite(pts).all()
    # batching: several faces per forward give the same points as one at a time
    boxes = np.stack([detector.detect(f)[0].box for f in sun_frames[:3]])
    batched = lm(sun_frames[:3], boxes)
    single = np.concatenate([lm([f], b[None]) for f, b in zip(sun_frames[:3], boxes)])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-3 * np.abs(single).max())


def test_pfld_weights_come_from_the_models_dir(pfld_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path / "nothing_here"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(SyncTalkError, match="dlib"):  # names the offline alternative
        create_landmarker("pfld", models_dir=models)
    shutil.copy(pfld_checkpoint, models / "checkpoint_epoch_335.pth.tar")
    shutil.copy(MEAN_FACE, models / "pfld_mean_face.txt")
    lm = create_landmarker("pfld", models_dir=models)
    assert lm.topology.num_points == 110


def test_pfld_output_is_mean_face_in_the_detector_square(detector: FaceDetector, tmp_path: Path, sun_frames) -> None:
    """With a zero head the network predicts the mean face: checks the crop → frame de-normalisation."""
    from pfld.model import build_pfld

    model = build_pfld()
    with torch.no_grad():
        model.conv_out.weight.zero_()
        model.conv_out.bias.zero_()
    path = tmp_path / "zero_head.pth.tar"
    torch.save({"pfld_backbone": model.state_dict()}, path)
    lm = create_landmarker("pfld", checkpoint_path=path, mean_face_path=MEAN_FACE)
    box = detector.detect(sun_frames[0])[0].box
    x0, y0, side = pfld_square_box(box)
    expected = load_mean_face(MEAN_FACE).reshape(110, 2) * side + [x0, y0]
    np.testing.assert_allclose(lm([sun_frames[0]], box[None])[0], expected, atol=1e-3)
    # the square is the detector box grown by 5 % around its centre
    assert side == int(max(int(box[2]) - int(box[0]), int(box[3]) - int(box[1])) * 1.05)


def test_pfld_bad_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"pfld_backbone": {"conv_out.weight": torch.zeros(220, 8, 1, 1), "foo.weight": torch.zeros(1)}}, path)
    with pytest.raises(SyncTalkError, match="PFLD_GhostOne"):
        create_landmarker("pfld", checkpoint_path=path, mean_face_path=MEAN_FACE)
    torch.save({"state": {}}, path)
    with pytest.raises(SyncTalkError, match="pfld_backbone"):
        create_landmarker("pfld", checkpoint_path=path, mean_face_path=MEAN_FACE)


def test_unknown_landmarker_lists_choices() -> None:
    with pytest.raises(SyncTalkError, match="pfld.*dlib"):
        create_landmarker("mediapipe")
    with pytest.raises(SyncTalkError, match="dlib68"):
        get_topology("ibug98")


# -- topology, crop boxes, smoothing ----------------------------------------------------------


def test_mouth_aperture_grows_when_the_mouth_opens() -> None:
    topo = get_topology("pfld")
    closed = load_mean_face(MEAN_FACE).reshape(1, 110, 2) * 200
    opened = closed.copy()
    opened[0, list(topo.inner_lip_bottom), 1] += 20
    ap = topo.mouth_aperture(np.concatenate([closed, opened]))
    assert ap.shape == (2,) and ap[1] > ap[0] + 0.05
    # normalised by face width: scaling the face leaves it unchanged
    np.testing.assert_allclose(topo.mouth_aperture(opened * 2), ap[1:], rtol=1e-5)
    with pytest.raises(SyncTalkError, match="110"):
        topo.mouth_aperture(np.zeros((3, 68, 2)))


def test_crop_boxes_follow_the_reference_rule_and_stay_in_frame() -> None:
    topo = get_topology("pfld110")
    lms = np.zeros((2, 110, 2), np.float32)
    lms[:, 1, 0], lms[:, 31, 0], lms[:, 52, 1] = [100, 20], [300, 220], [150, 400]
    boxes = crop_boxes_from_landmarks(lms, topo, (480, 640))
    assert boxes[0].tolist() == [100, 150, 300, 350]  # square from the contour width, top at the bridge
    assert boxes[1].tolist() == [20, 280, 220, 480]  # would leave the frame: moved up, still square
    bad = lms.copy()
    bad[0, 31, 0] = 50
    with pytest.raises(SyncTalkError, match="empty box"):
        crop_boxes_from_landmarks(bad, topo, (480, 640))


def test_smoothing_reduces_jitter() -> None:
    rng = np.random.default_rng(0)
    n = 200
    t = np.arange(n)
    cx = 320 + 30 * np.sin(t / 40)
    cy = 240 + 10 * np.cos(t / 55)
    side = 200 + 10 * np.sin(t / 90)
    truth = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)
    noisy = truth + rng.normal(0, 3, size=(n, 1)) * [1, 1, 1, 1] + rng.normal(0, 3, size=(n, 4))
    noisy[:, 2:] = noisy[:, :2] + (noisy[:, 2:3] - noisy[:, 0:1])  # square, as the crop rule makes them
    smooth = smooth_boxes(noisy.round().astype(np.int32), frame_hw=(480, 640))
    assert smooth.shape == (n, 4) and smooth.dtype == np.int32
    assert np.all(smooth[:, 2] - smooth[:, 0] == smooth[:, 3] - smooth[:, 1])

    def jitter(b):
        return np.abs(np.diff(b.astype(float), axis=0)).mean()

    assert jitter(smooth) < 0.5 * jitter(noisy)
    assert np.abs(smooth - truth).mean() < np.abs(noisy - truth).mean()
    assert np.all(smooth[:, :2] >= 0) and np.all(smooth[:, 2] <= 640) and np.all(smooth[:, 3] <= 480)


def test_smoothing_does_not_blend_across_a_cut() -> None:
    a = np.tile([100, 100, 300, 300], (10, 1))
    b = np.tile([400, 120, 600, 320], (10, 1))
    smooth = smooth_boxes(np.concatenate([a, b]))
    np.testing.assert_array_equal(smooth[:10], a)
    np.testing.assert_array_equal(smooth[10:], b)


def test_crop_frame_size_and_padding() -> None:
    img = np.full((400, 500, 3), 200, np.uint8)
    out = crop_frame(img, [100, 50, 400, 350])
    assert out.shape == (328, 328, 3) and out.dtype == np.uint8 and (out == 200).all()
    edge = crop_frame(img, [-50, -50, 250, 250], size=64)
    assert edge.shape == (64, 64, 3)
    assert edge[0, 0].max() == 0 and edge[-1, -1].min() == 200  # outside the frame is black
    with pytest.raises(SyncTalkError):
        crop_frame(img, [10, 10, 10, 40])


def test_crop_of_a_real_face(detector: FaceDetector, dlib_landmarker, sun_frames) -> None:
    lms, found = FaceLandmarkPipeline(detector, dlib_landmarker).process(sun_frames[:4])
    h, w = sun_frames[0].shape[:2]
    boxes = smooth_boxes(crop_boxes_from_landmarks(lms, dlib_landmarker.topology, (h, w)), frame_hw=(h, w))
    crop = crop_frame(sun_frames[0], boxes[0])
    assert crop.shape == (328, 328, 3) and crop.std() > 10
    # the mouth lands horizontally centred in the crop's upper half, below the nose at its top
    side = boxes[0, 2] - boxes[0, 0]
    mouth = (lms[0, list(dlib_landmarker.topology.mouth_outer)] - boxes[0, :2]) * (328 / side)
    assert np.all((mouth > 0) & (mouth < 328))
    assert abs(mouth[:, 0].mean() - 164) < 0.15 * 328
    assert 0.1 * 328 < mouth[:, 1].min() and mouth[:, 1].max() < 0.6 * 328


# -- dlib's own face detector (no model file) and the detector choice ----------------------------


@pytest.fixture(scope="module")
def hog():
    from synctalk.faces.dlib_detector import DlibFaceDetector

    return DlibFaceDetector()


@pytest.mark.parametrize("video", ["sun.mp4", "clip3.mp4"])
def test_dlib_detector_boxes_agree_with_scrfd(detector: FaceDetector, hog, dlib_landmarker, video: str) -> None:
    """Same box convention as SCRFD (IoU > 0.7), and the landmarks from either box agree within pixels."""
    frames = read_frames(video, [0, 10, 20])
    for f in frames:
        dets = hog.detect(f)
        assert len(dets) == 1
        d, s = dets[0], detector.detect(f)[0]
        assert box_iou(d.box, s.box[None])[0, 0] > 0.7
        assert d.score > 0 and d.kps.shape == (5, 2)
        # keypoints inside the box, eyes above the mouth corners, like SCRFD's
        x1, y1, x2, y2 = d.box
        assert np.all((d.kps[:, 0] > x1) & (d.kps[:, 0] < x2) & (d.kps[:, 1] > y1) & (d.kps[:, 1] < y2))
        assert d.kps[:2, 1].max() < d.kps[3:, 1].min()
        assert np.abs(d.kps - s.kps).max() < 0.15 * s.width
        lm_hog, lm_scrfd = dlib_landmarker([f], d.box[None]), dlib_landmarker([f], s.box[None])
        assert np.abs(lm_hog - lm_scrfd).mean() < 2.0  # pixels


def test_dlib_detector_searches_downscaled_once_it_knows_the_face(sun_frames) -> None:
    import synctalk.faces.dlib_detector as dd

    hog = dd.DlibFaceDetector(keypoints=False)
    big = cv2.resize(sun_frames[0], None, fx=2, fy=2)  # a 230-px face: searched at about half size
    first = hog.detect(big)[0].box
    seen = []
    real_run = hog._run
    hog._run = lambda gray, scale, up: seen.append(scale) or real_run(gray, scale, up)
    second = hog.detect(big)[0].box
    assert seen and seen[0] < dd.MAX_SEARCH_SCALE
    assert box_iou(first, second[None])[0, 0] > 0.8
    assert hog.detect(np.zeros((240, 320, 3), np.uint8)) == []


def test_pipeline_with_the_dlib_detector(hog, dlib_landmarker, sun_frames) -> None:
    pipe = FaceLandmarkPipeline(hog, dlib_landmarker, workers=4, detect_every=4)
    assert pipe.workers == 1  # dlib keeps the GIL: no thread pool
    lms, found = pipe.process(sun_frames)
    assert found.all() and lms.shape == (8, 68, 2) and np.isfinite(lms).all()


def test_detector_choice_auto_scrfd_dlib(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from synctalk.faces.factory import choose_detector, create_detector

    monkeypatch.delenv("SYNCTALK_MODELS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    auto = choose_detector("auto", empty)
    assert auto.kind == "dlib"
    line = auto.describe()
    assert line.startswith("face detector: dlib HOG") and "scrfd_2.5g_kps.onnx not found" in line
    assert str(empty) in line and "synctalk models download scrfd" in line
    # asked for by name and missing: an error naming the download and the alternative, never a switch
    with pytest.raises(SyncTalkError, match="synctalk models download scrfd") as err:
        choose_detector("scrfd", empty)
    assert "--detector dlib" in str(err.value)
    with pytest.raises(SyncTalkError, match="auto, scrfd, dlib"):
        choose_detector("mtcnn")
    # the file present: auto takes SCRFD; --detector dlib still gives dlib
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(SCRFD, models / SCRFD.name)
    chosen = choose_detector("auto", models)
    assert (chosen.kind, chosen.path) == ("scrfd", models / SCRFD.name)
    assert isinstance(create_detector(chosen), FaceDetector)
    assert choose_detector("dlib", models).kind == "dlib"
    assert type(create_detector("dlib")).__name__ == "DlibFaceDetector"
