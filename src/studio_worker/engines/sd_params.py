"""The sd-cpp engine's parameters: pure functions of the offer (behaviour §6.2).

Model files by role, as `StableDiffusion(...)` arguments:

| role | argument | note |
| --- | --- | --- |
| `diffusion-model` | `diffusion_model_path` | |
| `model` | `model_path` | a full checkpoint, used only without a `diffusion-model` |
| `text-encoder` | `llm_path` | |
| `text-encoder-vision` | `llm_vision_path` | |
| `vae` | `vae_path` | |
| `lora` | `lora_model_dir` + `<lora:file:1>` | every LoRA of the source applies at 1.0 |

`cliDefaults`: `offloadToCpu` → `offload_params_to_cpu`, `mmap` → `enable_mmap`,
`maxVramGib` → `max_vram`, `zeroCondT` → `qwen_image_zero_cond_t` (load options);
`cfgScale`, `steps`, `width`, `height`, `samplingMethod`, `flowShift` → the generation
call, each overridden by the task's own value when it sets one (`sample_options`). A 0 in
`cliDefaults` means "not set". Flash attention in the diffusion model is always on, as
the reference worker passes `--diffusion-fa`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio_worker.domain.results import JobError
from studio_worker.domain.tasks import ImageTask, ModelCliDefaults, ModelFile, VideoTask

log = logging.getLogger(__name__)

# Parameter resolution (behaviour §6.2)
DEFAULT_SIDE = 1024
DEFAULT_STEPS = 8
DEFAULT_CFG = 1.0
DEFAULT_STRENGTH = 0.75
UNCHOSEN_STEPS = 20  # the task's default: "the studio did not choose"
MAX_SIDE = 4096
MAX_STEPS = 500

_LORA_TAG = re.compile(r"<lora:[^>]*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What a `StableDiffusion(...)` context is built from; equal options, same context."""

    model_path: str = ""
    diffusion_model_path: str = ""
    llm_path: str = ""
    llm_vision_path: str = ""
    vae_path: str = ""
    lora_model_dir: str = ""
    offload_params_to_cpu: bool = False
    enable_mmap: bool = False
    max_vram: float = 0.0
    qwen_image_zero_cond_t: bool = False
    diffusion_flash_attn: bool = True
    n_threads: int = -1
    loras: tuple[str, ...] = field(default=())  # prompt tags, relative to lora_model_dir

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the binding's `StableDiffusion`."""
        values = asdict(self)
        del values["loras"]
        return values

    @property
    def paths(self) -> list[Path]:
        """The model files of the context (LoRAs included)."""
        files = (
            self.model_path,
            self.diffusion_model_path,
            self.llm_path,
            self.llm_vision_path,
            self.vae_path,
        )
        loras = [str(Path(self.lora_model_dir) / _lora_name(tag)) for tag in self.loras]
        return [Path(p) for p in (*files, *loras) if p]

    @property
    def files(self) -> list[str]:
        return [path.name for path in self.paths]


def _path_of(file: ModelFile, model_paths: Mapping[str, Path]) -> Path:
    path = model_paths.get(file.filename)
    if path is None:
        raise JobError(f"model file {file.filename} was not provided", retryable=True)
    return path


def load_options(
    files: Sequence[ModelFile],
    model_paths: Mapping[str, Path],
    cli: ModelCliDefaults,
    *,
    n_threads: int = -1,
) -> LoadOptions:
    """Map the model files (by role) and the load-relevant `cliDefaults` to a context.

    Without a `diffusion-model` or `model` file → a non-retryable JobError. Roles this
    engine does not know are ignored; a second file of a single-file role is ignored.
    """
    by_role: dict[str, Path] = {}
    loras: list[Path] = []
    for file in files:
        if file.role == "lora":
            loras.append(_path_of(file, model_paths))
        elif file.role in _ROLE_ARGS and file.role not in by_role:
            by_role[file.role] = _path_of(file, model_paths)
        elif file.role in _ROLE_ARGS:
            log.warning("modelSource has a second %s file (%s): ignored", file.role, file.filename)
    if "diffusion-model" not in by_role and "model" not in by_role:
        raise JobError("modelSource has no diffusion-model / model file", retryable=False)
    if "diffusion-model" in by_role:
        by_role.pop("model", None)  # a full checkpoint only stands in for a missing one
    paths = {role: str(path) for role, path in by_role.items()}
    lora_dir, tags = _lora_tags(loras)
    return LoadOptions(
        model_path=paths.get("model", ""),
        diffusion_model_path=paths.get("diffusion-model", ""),
        llm_path=paths.get("text-encoder", ""),
        llm_vision_path=paths.get("text-encoder-vision", ""),
        vae_path=paths.get("vae", ""),
        lora_model_dir=lora_dir,
        loras=tags,
        offload_params_to_cpu=bool(cli.offload_to_cpu),
        enable_mmap=bool(cli.mmap),
        max_vram=float(cli.max_vram_gib) if cli.max_vram_gib and cli.max_vram_gib > 0 else 0.0,
        qwen_image_zero_cond_t=bool(cli.zero_cond_t),
        n_threads=n_threads,
    )


def _lora_name(tag: str) -> str:
    return tag.removeprefix("<lora:").rsplit(":", 1)[0]


_ROLE_ARGS = frozenset({"diffusion-model", "model", "text-encoder", "text-encoder-vision", "vae"})


def _lora_tags(loras: Sequence[Path]) -> tuple[str, tuple[str, ...]]:
    """(lora_model_dir, `<lora:…:1>` tags) for the source's LoRA files."""
    if not loras:
        return "", ()
    folder = loras[0].parent
    tags = []
    for path in loras:
        try:
            name = os.path.relpath(path, folder)
        except ValueError as exc:  # another drive (Windows)
            raise JobError(
                f"LoRA {path.name} is not beside {loras[0].name}", retryable=False
            ) from exc
        if any(c in name for c in ":<>"):
            raise JobError(f"LoRA file name {path.name} cannot be passed on", retryable=False)
        tags.append(f"<lora:{name}:1>")
    return str(folder), tuple(tags)


@dataclass(frozen=True, slots=True)
class SampleOptions:
    """The generation settings of one job after task overrides and cliDefaults."""

    width: int
    height: int
    steps: int
    cfg_scale: float
    sample_method: str | None
    flow_shift: float | None


def sample_options(task: ImageTask | VideoTask, cli: ModelCliDefaults) -> SampleOptions:
    """Resolve size, steps, cfg, sampler and flow shift (behaviour §6.2).

    width/height: the task's if > 0, else cliDefaults' if > 0, else 1024. steps: the
    task's if > 0 and not 20 (the task default, "not chosen"), else cliDefaults' if > 0,
    else 8. cfg: the task's if > 0, else cliDefaults' if > 0, else 1.0. sampler: the
    task's, else cliDefaults'. A video task has no steps, cfg or sampler of its own.
    """
    task_steps = task.steps if isinstance(task, ImageTask) else 0
    task_cfg = task.cfg_scale if isinstance(task, ImageTask) else None
    task_sampler = task.sampling_method if isinstance(task, ImageTask) else None
    width = _first_positive(task.width, cli.width) or DEFAULT_SIDE
    height = _first_positive(task.height, cli.height) or DEFAULT_SIDE
    steps = (
        task_steps
        if task_steps > 0 and task_steps != UNCHOSEN_STEPS
        else (cli.steps if cli.steps > 0 else DEFAULT_STEPS)
    )
    cfg = _first_positive(task_cfg, cli.cfg_scale) or DEFAULT_CFG
    sampler = (task_sampler or "").strip() or (cli.sampling_method or "").strip() or None
    flow_shift = cli.flow_shift if cli.flow_shift is not None and cli.flow_shift > 0 else None
    for name, side in (("width", width), ("height", height)):
        if side > MAX_SIDE:
            raise JobError(f"{name} {side} is above the limit of {MAX_SIDE}", retryable=False)
    if steps > MAX_STEPS:
        raise JobError(f"steps {steps} is above the limit of {MAX_STEPS}", retryable=False)
    if not math.isfinite(cfg):
        raise JobError("cfgScale must be a finite number", retryable=False)
    return SampleOptions(width, height, steps, float(cfg), sampler, flow_shift)


def _first_positive(*values: float | None) -> Any:
    return next((v for v in values if v is not None and v > 0), None)


def strength_of(task: ImageTask) -> float:
    """img2img strength: `denoise`, else 0.75; outside 0…1 → a non-retryable JobError."""
    if task.denoise is None:
        return DEFAULT_STRENGTH
    if not (math.isfinite(task.denoise) and 0.0 <= task.denoise <= 1.0):
        raise JobError(f"denoise {task.denoise} must be between 0 and 1", retryable=False)
    return float(task.denoise)


def clean_prompt(prompt: str) -> str:
    """The prompt without `<lora:…>` tags: a studio prompt does not pick local files."""
    cleaned = _LORA_TAG.sub("", prompt)
    if cleaned != prompt:
        log.warning("removed <lora:…> tags from the prompt (LoRAs come from the model source)")
    return cleaned


def sample_method(name: str) -> str:
    """The binding's name of a `samplingMethod`; one it does not know → a JobError."""
    from stable_diffusion_cpp.stable_diffusion import SAMPLE_METHOD_MAP

    wanted = name.strip().lower()
    known = [k for k in SAMPLE_METHOD_MAP if k not in ("default", "sample_method_count")]
    if wanted not in known and wanted != "default":
        raise JobError(
            f"unknown samplingMethod `{name}`: stable-diffusion.cpp knows {', '.join(known)}",
            retryable=False,
        )
    return wanted
