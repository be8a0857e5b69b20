"""The 328-px networks: the UNet generator with its audio heads, and the SyncNet critic.

Names are resolved lazily so that importing the package (e.g. from the command line) costs nothing
until a network is actually built.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_unet": "model",
    "UNet328": "model",
    "WIDTHS": "model",
    "count_parameters": "model",
    "count_flops": "model",
    "build_audio_head": "audio_heads",
    "resolve_widths": "blocks",
    "MelHead": "audio_heads",
    "ReshapedFeatureHead": "audio_heads",
    "SyncNet": "syncnet",
    "MouthDiscriminator": "discriminator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unet_328' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
