#!/usr/bin/env python
"""Real against generated mouths at a few moments: the picture in README (see synctalk.evaluate.figure).

    python scripts/mouth_figure.py --rendered unseen_l1.mp4 unseen_adv.mp4 --reference grid_s1_unseen_90s.mp4 \\
        --frames 40,95,150,230,310,420 --output docs/mouth_unseen.png
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synctalk.errors import SyncTalkError  # noqa: E402
from synctalk.evaluate.figure import mouth_strip  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, write the picture."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rendered", required=True, type=Path, nargs="+",
                   help="synctalk infer's output for the reference's speech (several: a row each, in this order)")
    p.add_argument("--reference", required=True, type=Path, help="the real recording")
    p.add_argument("--frames", required=True, help="comma-separated frame numbers (25 fps)")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--models_dir", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        frames = [int(f) for f in args.frames.split(",") if f.strip()]
        print(mouth_strip(args.rendered, args.reference, frames, args.output, models_dir=args.models_dir))
    except (SyncTalkError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
