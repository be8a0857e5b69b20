"""Landmark schemes: which points define the crop box and the mouth, per landmark network."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SyncTalkError


@dataclass(frozen=True)
class Topology:
    """Point indices of one landmark scheme.

    The crop rule (see `synctalk.faces.crop`) is a square whose left/right edges are the mean x of
    `crop_left` / `crop_right` and whose top is the mean y of `crop_top`; its side is the width.
    """

    name: str
    num_points: int
    crop_left: tuple[int, ...]
    crop_right: tuple[int, ...]
    crop_top: tuple[int, ...]
    mouth_outer: tuple[int, ...]
    mouth_inner: tuple[int, ...]
    inner_lip_top: tuple[int, ...]  # paired index by index with inner_lip_bottom
    inner_lip_bottom: tuple[int, ...]
    mouth_corners: tuple[int, int]

    def crop_edges(self, lms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(left x, right x, top y) of the crop rule for landmarks (..., P, 2)."""
        lms = self._check(lms)
        left = lms[..., list(self.crop_left), 0].mean(axis=-1)
        right = lms[..., list(self.crop_right), 0].mean(axis=-1)
        top = lms[..., list(self.crop_top), 1].mean(axis=-1)
        return left, right, top

    def face_width(self, lms: np.ndarray) -> np.ndarray:
        """Width between the crop-rule contour points, (...,)."""
        left, right, _ = self.crop_edges(lms)
        return right - left

    def mouth_aperture(self, lms: np.ndarray) -> np.ndarray:
        """Mean inner-lip opening divided by face width: (N, P, 2) → (N,), or (P, 2) → scalar array."""
        lms = self._check(lms)
        top = lms[..., list(self.inner_lip_top), :]
        bottom = lms[..., list(self.inner_lip_bottom), :]
        gap = np.linalg.norm(bottom - top, axis=-1).mean(axis=-1)
        width = np.abs(self.face_width(lms))
        return (gap / np.maximum(width, 1e-6)).astype(np.float32)

    def _check(self, lms: np.ndarray) -> np.ndarray:
        lms = np.asarray(lms, dtype=np.float32)
        if lms.ndim < 2 or lms.shape[-2:] != (self.num_points, 2):
            raise SyncTalkError(
                f"landmarks of shape {lms.shape} do not match topology {self.name!r} "
                f"({self.num_points} points): were they made with a different landmark model?"
            )
        return lms


# 110-point PFLD scheme: 0-32 face contour (left ear → chin → right ear), 33-50 brows,
# 51-54 nose bridge (51 lowest), 55-65 nose, 66-89 eyes, 90-101 outer lip (90 left corner,
# 93 top centre, 96 right corner, 99 bottom centre), 102-109 inner lip (104 top, 108 bottom).
PFLD110 = Topology(
    name="pfld110",
    num_points=110,
    crop_left=(1,),
    crop_right=(31,),
    crop_top=(52,),
    mouth_outer=tuple(range(90, 102)),
    mouth_inner=tuple(range(102, 110)),
    inner_lip_top=(103, 104, 105),
    inner_lip_bottom=(109, 108, 107),
    mouth_corners=(90, 96),
)

# dlib / iBUG 68-point scheme: 0-16 jaw, 17-26 brows, 27-30 nose bridge, 31-35 nostrils,
# 36-47 eyes, 48-59 outer lip, 60-67 inner lip. The crop points were chosen so the box matches
# the PFLD110 rule on the same face: with the 110-point mean face fitted onto dlib landmarks of
# fixture frames (eyes, nose tip, mouth corners, chin), 110-point contour points 1/31 fall on dlib
# jaw points 0/16 (mean offset 1% of the face width) and bridge point 52 on dlib 29 (0.3%).
DLIB68 = Topology(
    name="dlib68",
    num_points=68,
    crop_left=(0,),
    crop_right=(16,),
    crop_top=(29,),
    mouth_outer=tuple(range(48, 60)),
    mouth_inner=tuple(range(60, 68)),
    inner_lip_top=(61, 62, 63),
    inner_lip_bottom=(67, 66, 65),
    mouth_corners=(48, 54),
)

TOPOLOGIES: dict[str, Topology] = {t.name: t for t in (PFLD110, DLIB68)}
_ALIASES = {"pfld": "pfld110", "dlib": "dlib68"}


def get_topology(name: str) -> Topology:
    """Look up a landmark scheme by name ('pfld110', 'dlib68', or the landmarker kind 'pfld'/'dlib')."""
    key = _ALIASES.get(name, name)
    if key not in TOPOLOGIES:
        raise SyncTalkError(f"unknown landmark topology {name!r}; choose one of {sorted(TOPOLOGIES)}")
    return TOPOLOGIES[key]


def topology_for_points(num_points: int) -> Topology:
    """The scheme with this many points (to read back landmark files of unknown origin)."""
    for topo in TOPOLOGIES.values():
        if topo.num_points == num_points:
            return topo
    raise SyncTalkError(
        f"no landmark topology has {num_points} points; known: "
        + ", ".join(f"{t.name} ({t.num_points})" for t in TOPOLOGIES.values())
    )
