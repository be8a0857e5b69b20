"""PFLD facial landmark network (GhostOne/MobileOne backbone, SyncTalk-compatible checkpoints)."""

from .model import PFLDGhostOne, build_pfld

__all__ = ["PFLDGhostOne", "build_pfld"]
