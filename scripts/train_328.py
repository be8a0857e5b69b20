#!/usr/bin/env python
"""`synctalk train` with the seed's script name: --train_syncnet trains the SyncNet, otherwise the UNet-328."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synctalk.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
