"""Where a stage runs: the device and the precision, resolved once from `--device`/`--dtype`.

`auto` means CUDA with bfloat16 (float16 on a GPU without bfloat16) when a GPU is present,
else the CPU in float32. Every stage (generate, train rl, train sft, eval, the loop) loads its
student through `Placement`, and records `describe()` with what it produced: the run's config,
each rollout's generation record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from ares_data.errors import TrainingError

from .options import option

DEVICE_HELP = "Where to run: auto (CUDA if present, else CPU), cpu, cuda or cuda:N."
DTYPE_HELP = "Weights' precision; auto: bfloat16 on CUDA, float32 on CPU."
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class RunsOn:
    """`--device`/`--dtype` of a command without a trainer config of its own (`eval`)."""

    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("auto", DTYPE_HELP)


@dataclass(frozen=True)
class Placement:
    """A resolved device (`cpu`, `cuda:0`, ...) and dtype name (`float32`, `bfloat16`, `float16`)."""

    device: str
    dtype: str

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def describe(self) -> dict[str, str]:
        return {"device": self.device, "dtype": self.dtype}


def resolve_device(spec: str = "auto") -> str:
    """`auto` -> `cuda:0` when CUDA is available, else `cpu`; `cuda[:N]` is checked to exist."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2] or "0"
        if not index.isdigit():
            raise TrainingError(f"--device {spec!r}: expected cuda or cuda:N with N a number")
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {spec}: no CUDA GPU is visible to torch (torch {torch.__version__})")
        if int(index) >= torch.cuda.device_count():
            raise TrainingError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return f"cuda:{index}"
    raise TrainingError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")


def resolve_dtype(spec: str, device: str) -> str:
    """`auto` -> bfloat16 on CUDA (float16 where bfloat16 is unsupported), float32 on the CPU."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec not in get_args(DtypeName):
        raise TrainingError(f"--dtype {spec!r}: expected one of {', '.join(get_args(DtypeName))}")
    if spec != "auto":
        return spec
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def resolve(device: str = "auto", dtype: str = "auto") -> Placement:
    """The placement for a `--device`/`--dtype` pair (each `auto` by default)."""
    where = resolve_device(device)
    return Placement(where, resolve_dtype(dtype, where))


def placement_of(model: Any) -> Placement:
    """Where an already loaded model lies (its first parameter's device and dtype)."""
    param = next(model.parameters())
    return Placement(str(param.device), str(param.dtype).removeprefix("torch."))
