"""What both training tasks share at run time: the process's place in a torchrun
(DistributedDataParallel) run with its collectives, precision, memory layout, compile/CUDA-graph
switches, the optimizer, random states. Imported only when training runs, so torch comes first.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as td
from torch.nn.parallel import DistributedDataParallel

from ..device import resolve_device
from ..errors import SyncTalkError

@dataclass(frozen=True)
class Distributed:
    """This process's place in a run: rank 0 alone writes files; each rank trains on its shard.

    A single-process run is rank 0 of 1. Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) the
    same code sees its rank; every rank draws the same epoch order (same seed) and keeps its slice.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        """Read torchrun's environment (defaults: one process)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, state, previews and logs."""
        return self.rank == 0

    def shard(self, order: Any) -> Any:
        """This rank's part of an epoch's sample order (every rank gets equally many)."""
        if self.world_size == 1:
            return order
        per = len(order) // self.world_size
        return order[self.rank * per:(self.rank + 1) * per]

    @property
    def enabled(self) -> bool:
        """Whether this is one of several processes (collectives run; otherwise they are no-ops)."""
        return self.world_size > 1

    def device(self, spec: str | None = "auto") -> torch.device:
        """This rank's device: cuda:LOCAL_RANK for a GPU in a multi-process run, else `spec` resolved."""

        dev = resolve_device(spec)
        if not self.enabled or dev.type != "cuda":
            return dev
        visible = torch.cuda.device_count()
        if self.local_rank >= visible:
            raise SyncTalkError(
                f"rank {self.rank} (local rank {self.local_rank}) has no GPU: torch sees {visible}; "
                f"start at most {visible} processes per node (--nproc_per_node / --gpus)"
            )
        # one GPU per process: the local rank picks it, whatever index --device named
        return torch.device("cuda", self.local_rank)

    def start(self, spec: str | None = "auto") -> torch.device:
        """Join the process group (NCCL on GPUs, gloo on the CPU) once; return this rank's device."""
        dev = self.device(spec)
        if not self.enabled:
            return dev

        if not td.is_initialized():
            # NVLink multicast (NVLS) hangs or fails on some hosts and gains nothing for these small models
            os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            td.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=self.rank,
                                  world_size=self.world_size)
        return dev

    def stop(self) -> None:
        """Leave the process group (when this process joined one)."""
        if not self.enabled:
            return

        if td.is_initialized():
            td.destroy_process_group()

    def _active(self) -> bool:
        if not self.enabled:
            return False

        return td.is_initialized()

    def _collective_device(self) -> torch.device:

        return torch.device("cuda", self.local_rank) if td.get_backend() == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        """Wait until every rank is here (a no-op in a single-process run)."""
        if not self._active():
            return

        if td.get_backend() == "nccl":
            td.barrier(device_ids=[self.local_rank])
        else:
            td.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it may build caches or fetch weights), then the others.

        When rank 0 fails there, the others stop with a short error instead of a broken collective.
        """
        if not self._active():
            yield
            return

        if self.is_main:
            try:
                yield
            except Exception:
                self.broadcast(True)
                raise
            self.broadcast(False)
        else:
            if self.broadcast(None):
                raise SyncTalkError(f"rank 0 failed (its error is above); rank {self.rank} stops too")
            yield

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (picklable objects: metrics, decisions)."""
        if not self._active():
            return obj

        box = [obj]
        td.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def agree(self, value: Any, what: str) -> Any:
        """Check that every rank reached the same `value` (e.g. the resumed epoch); raise on all ranks if not.

        Ranks on other nodes read their own dataset and checkpoint folders: when those differ, the run
        stops here with a message instead of hanging in a collective later.
        """
        if not self._active():
            return value

        seen: list[Any] = [None] * self.world_size
        td.all_gather_object(seen, value)
        if any(v != seen[0] for v in seen):
            raise SyncTalkError(
                f"the processes disagree on {what} (by rank: {seen}); every node must see the same dataset and "
                f"checkpoint folders (a shared filesystem, or identical copies)"
            )
        return value

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Combine per-rank epoch metrics: throughput summed, time the slowest rank's, the rest averaged.

        Every rank trains on equally many samples, so the plain mean of per-rank means is the mean
        over the whole epoch. All ranks must pass the same keys.
        """
        if not self._active() or not metrics:
            return metrics

        keys = sorted(metrics)
        vals = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=self._collective_device())
        longest = vals.clone()
        td.all_reduce(vals, op=td.ReduceOp.SUM)
        td.all_reduce(longest, op=td.ReduceOp.MAX)
        out = {}
        for i, k in enumerate(keys):
            if k == "samples_per_s":
                out[k] = float(vals[i])
            elif k == "seconds":
                out[k] = float(longest[i])
            else:
                out[k] = float(vals[i]) / self.world_size
        return out

    def wrap(self, model: torch.nn.Module, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
        """The module wrapped in DistributedDataParallel (the module itself in a single-process run).

        DDP's default broadcasts buffers (BatchNorm running statistics) from rank 0 at every forward,
        so the statistics rank 0 saves are the ones all ranks used. `sync_bn` converts BatchNorm layers to
        SyncBatchNorm (batch statistics over all ranks; GPUs only); parameters and state-dict keys
        stay the same, so checkpoints load either way.
        """
        if not self.enabled:
            return model

        if sync_bn:
            if device.type != "cuda":
                raise SyncTalkError("--sync_bn needs CUDA devices; drop it for a CPU run")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # With channels_last, a depthwise weight (C, 1, k, k) and its gradient can disagree only in the
        # stride of the size-1 dimension: the same memory order, so DDP's extra copy is of a few hundred
        # numbers. Its once-per-process warning says nothing a user can act on.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        # every parameter takes part in each step, so the unused-parameter search stays off
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=False)

    def log(self, *parts: Any) -> None:
        """print() on rank 0 only (the other ranks' lines would repeat it)."""
        if self.is_main:
            print(*parts, flush=True)


def autocast(device: torch.device, amp: str) -> "contextlib.AbstractContextManager[Any]":
    """The autocast context of a resolved amp mode (a no-op for 'none')."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def make_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A gradient scaler, active only for fp16."""
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))


def make_adam(params: Any, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam, fused into one kernel per step on CUDA."""
    params = [p for p in params if p.requires_grad]
    if device.type == "cuda":
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr)


def prepare_module(model: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    """Move a module to the device (channels_last memory format when asked)."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an optimizer state and give each moment tensor its parameter's memory layout.

    A checkpoint made with --channels_last (or without) is resumed either way: fused Adam needs
    parameters and moments with the same strides.
    """
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            for key, value in st.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    st[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def configure_backends(device: torch.device) -> None:
    """TF32 for the float32 matmuls and convolutions left outside autocast on CUDA.

    cuDNN autotuning (cudnn.benchmark) is left off: on an H200 it cost a minute of tuning before
    the first step and gave no measurable speed to these networks.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def maybe_compile(model: torch.nn.Module, enabled: bool, graphs: bool = False) -> torch.nn.Module:
    """torch.compile when asked (the returned module shares parameters with `model`).

    `graphs`: record CUDA graphs of the compiled code and replay them (mode "reduce-overhead", one
    graph per input shape, so shapes are kept static); each training step must then begin with
    begin_step(True). It removes the host's kernel-launch time, which bounds small batches.
    """
    if not enabled:
        return model
    keep_compile_cache()
    if graphs:
        return torch.compile(model, mode="reduce-overhead", dynamic=False)
    return torch.compile(model)


def keep_compile_cache() -> Path:
    """Where torch.compile keeps what it compiled: $TORCHINDUCTOR_CACHE_DIR when set, else
    $XDG_CACHE_HOME/synctalk/compile (~/.cache/…), which outlives a reboot, unlike torch's own /tmp
    default. A later run of the same networks on the same machine then skips most of the first
    epoch's compile (on an H200: the UNet's first epoch 108 s with an empty cache, 35 s with one)."""
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(base).expanduser() / "synctalk" / "compile")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def use_graphs(cuda_graphs: bool, device: torch.device) -> bool:
    """Whether compiled networks replay CUDA graphs (asked for, on a CUDA device; graphs imply compile)."""
    return bool(cuda_graphs and device.type == "cuda")


def begin_step(graphs: bool) -> None:
    """Start a training step: with CUDA graphs, the memory of the previous step's graph outputs may be reused."""
    if graphs:
        torch.compiler.cudagraph_mark_step_begin()


def scaled_lr(lr: float, batch_size: int, base_batch: int, rule: str) -> float:
    """Learning rate for a batch size other than the one `lr` was tuned for."""

    if rule == "none":
        return lr
    if rule == "linear":
        return lr * batch_size / base_batch
    if rule == "sqrt":
        return lr * (batch_size / base_batch) ** 0.5
    raise SyncTalkError(f"--lr_scaling must be none, linear or sqrt, got {rule!r}")


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Random states to store in a checkpoint (torch CPU/CUDA and the sampler's generator)."""
    state = {"torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any] | None, generator: torch.Generator) -> None:
    """Put back what rng_state saved (whatever of it applies on this machine)."""
    if not state:
        return
    with contextlib.suppress(Exception):
        torch.set_rng_state(state["torch"])
    with contextlib.suppress(Exception):
        generator.set_state(state["sampler"])
    if torch.cuda.is_available() and state.get("cuda") is not None:
        with contextlib.suppress(Exception):
            cuda = state["cuda"]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)


def batches(n: int, batch_size: int, drop_last: bool = False) -> Iterator[slice]:
    """Slices of an epoch's order; a last batch too small for BatchNorm (< 2) is dropped, and with
    `drop_last` any last partial batch after a full one (compiled steps then see a single shape)."""
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if start > 0 and (stop - start < 2 or (drop_last and stop - start < batch_size)):
            return
        yield slice(start, stop)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_finite(value: float, epoch: int) -> None:
    """Stop with a clear message when the loss is NaN or infinite."""
    if not math.isfinite(value):
        raise SyncTalkError(f"the loss became {value} in epoch {epoch}: lower --lr or try --amp none")
