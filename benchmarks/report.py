"""The benchmark's report: the machine, the JSON, the table."""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path
from typing import Any

from . import common
from .common import PRIMARY

def machine_info(device: Any) -> dict:
    """What the numbers were measured on."""
    import os

    import torch

    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "platform": platform.platform()}
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info.update(gpu=prop.name, gpu_memory_gib=round(prop.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported())
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = None
    info["ffmpeg"] = common.ffmpeg_path() is not None
    return info


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}" if abs(v) >= 0.01 else f"{v:.2e}"
    return str(v)


def print_table(report: dict) -> None:
    """A compact table of every stage's variants (rich when available, plain text otherwise)."""
    rows = []
    for stage, rec in report["stages"].items():
        key, unit = PRIMARY[stage]
        if rec["status"] != "ok":
            rows.append((stage, rec["status"], "–", "", "–", (rec.get("reason") or "")[:80]))
            continue
        for variant, m in rec["results"].items():
            extra = []
            for k in ("batch", "amp", "speedup", "val_l1", "quality_samples", "frames", "weights", "landmark_device",
                      "detect_every", "global_batch", "scaling"):
                if k in m and m[k] is not None:
                    extra.append(f"{k} {_fmt(m[k])}")
            rows.append((stage, variant, _fmt(m.get(key)), unit, _fmt(m.get("peak_gpu_mib")), ", ".join(extra)))
    title = f"synctalk speed — {report['machine'].get('gpu') or report['machine']['device']} ({report['size']})"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for r in rows:
            print("  ".join(str(c) for c in r))
        return
    table = Table(title=title)
    for col, justify in (("stage", "left"), ("variant", "left"), ("rate", "right"), ("unit", "left"),
                         ("peak GPU MiB", "right"), ("details", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(*r)
    Console(width=160).print(table)


def finish(report: dict, args: argparse.Namespace) -> None:
    """Print the JSON and then the table; write the JSON file when asked."""
    if not args.quiet:
        print(json.dumps(report, indent=1, default=str))
    if args.json:
        from synctalk.fileio import write_json_atomic

        path = Path(args.json).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, report)
        common.say(args, f"results → {path}")
    if report.get("stages"):
        print_table(report)

