#!/usr/bin/env python
"""The seed's training script: its flags map onto `synctalk train-syncnet` (--train_syncnet) or
`synctalk train-unet` (otherwise); see synctalk/training/commands/legacy.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synctalk.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
