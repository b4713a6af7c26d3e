"""The sd-cpp engine: image and video jobs on stable-diffusion.cpp, in process.

Serves `image` (protocol §5.1) and `video` (§5.5) tasks of `modelSource.engine == "sd-cpp"`
through the stable-diffusion-cpp-python binding. The binding is imported only when a model
is loaded: the parent process builds this class just to read `models_per_kind()`.

Model files by role (behaviour §6.2), as `StableDiffusion(...)` arguments:

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

A job fetches its input images (https or loopback http, 32 MiB each) and decodes them by
their content (Pillow), so a failed download or an undecodable image fails the job; it
never falls back to text-to-image. The last loaded context stays resident for the next job
with the same files and load options. stable-diffusion.cpp has no way to stop a running
generation: a cancel lands before or after one (a video: between frames); the engine host
stops the process when a cancel is ignored too long.
"""

from __future__ import annotations

import ctypes
import io
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import BinaryResult, CannotServe, JobError, JobResult
from studio_worker.domain.tasks import (
    ImageTask,
    JobOfferClaim,
    ModelCliDefaults,
    ModelFile,
    ModelSource,
    VideoTask,
)
from studio_worker.engines.base import Progress, ThrottledProgress, no_progress
from studio_worker.engines.inputs import display_url, fetch_input
from studio_worker.engines.resident import Residency
from studio_worker.engines.video import NEXT_FRAME_STRENGTH, encode_video, plan_video

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
native_log = logging.getLogger(f"{__name__}.sd_cpp")

WILDCARD = "sd-cpp:*"
MAX_INPUT_BYTES = 32 * 1024 * 1024
MAX_INPUT_PIXELS = 64 * 1024 * 1024
FETCH_TIMEOUT_S = 60.0
# Parameter resolution (behaviour §6.2)
DEFAULT_SIDE = 1024
DEFAULT_STEPS = 8
DEFAULT_CFG = 1.0
DEFAULT_STRENGTH = 0.75
UNCHOSEN_STEPS = 20  # the task's default: "the studio did not choose"
MAX_SIDE = 4096
MAX_STEPS = 500
SEED_LIMIT = 2**31

# Output formats (protocol §5.1): png, jpg (for jpg/jpeg), bmp; webp for anything else.
_PILLOW_FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "webp": "WEBP"}
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 92},
    "WEBP": {"quality": 90, "method": 4},
}
_LORA_TAG = re.compile(r"<lora:[^>]*>", re.IGNORECASE)


# ---------------------------------------------------------------------------------------
# stable-diffusion.cpp's own log lines go to the `logging` tree, never to stdout
# ---------------------------------------------------------------------------------------

# sd_log_level_t: 0 debug, 1 info, 2 warn, 3 error. Its info lines are per-tensor and
# per-stage chatter: they go out at debug level.
_LOG_WARN, _LOG_ERROR = 2, 3
_NATIVE_LEVELS = {_LOG_WARN: logging.WARNING, _LOG_ERROR: logging.ERROR}
_native_errors: deque[str] = deque(maxlen=6)
_native_state: dict[str, Any] = {"callback": None}


def _on_native_log(level: int, text: bytes, user_data: Any) -> None:
    message = text.decode("utf-8", errors="replace").rstrip()
    if not message:
        return
    if level == _LOG_ERROR:
        _native_errors.append(message)
    native_log.log(_NATIVE_LEVELS.get(level, logging.DEBUG), "%s", message)


def route_native_logs() -> None:
    """Send stable-diffusion.cpp's log lines to `native_log` (keeping the last errors)."""
    if _native_state["callback"] is not None:
        return
    import stable_diffusion_cpp

    callback = stable_diffusion_cpp.sd_log_callback(_on_native_log)
    stable_diffusion_cpp.sd_set_log_callback(callback, ctypes.c_void_p(0))
    _native_state["callback"] = callback  # ctypes callbacks must outlive their use


# ---------------------------------------------------------------------------------------
# Parameters: pure functions of the offer
# ---------------------------------------------------------------------------------------


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


def output_ext(ext: str) -> str:
    """The ext a result is encoded as: png, jpg (for jpg/jpeg), bmp, else webp (§5.1)."""
    wanted = (ext or "").strip().lower().lstrip(".")
    if wanted == "jpeg":
        return "jpg"
    return wanted if wanted in _PILLOW_FORMATS else "webp"


def encode_image(image: Image.Image, ext: str) -> bytes:
    """Encode as `output_ext(ext)` (RGB)."""
    fmt = _PILLOW_FORMATS[output_ext(ext)]
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt, **_SAVE_OPTIONS.get(fmt, {}))
    return buffer.getvalue()


def clean_prompt(prompt: str) -> str:
    """The prompt without `<lora:…>` tags: a studio prompt does not pick local files."""
    cleaned = _LORA_TAG.sub("", prompt)
    if cleaned != prompt:
        log.warning("removed <lora:…> tags from the prompt (LoRAs come from the model source)")
    return cleaned


def decode_image(data: bytes, *, what: str, url: str) -> Image.Image:
    """An input image identified by its content; undecodable → non-retryable JobError."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_INPUT_PIXELS:
                raise JobError(
                    f"{what} at {display_url(url)} is {opened.width}×{opened.height}: "
                    f"more than {MAX_INPUT_PIXELS // (1024 * 1024)} megapixels",
                    retryable=False,
                )
            fmt = opened.format
            image = ImageOps.exif_transpose(opened)
            image.load()
    except JobError:
        raise
    except Exception as exc:  # not an image, truncated, unsupported, decompression bomb
        raise JobError(
            f"could not decode the {what} at {display_url(url)}: {exc}", retryable=False
        ) from exc
    log.info("%s: %s %d×%d", what, fmt, image.width, image.height)
    return image


# ---------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Inputs:
    init: Image.Image | None = None
    mask: Image.Image | None = None
    ref: Image.Image | None = None


def _default_threads() -> int:
    cpus = os.cpu_count() or 1
    return cpus if cpus <= 4 else cpus // 2


class SdCppEngine(Residency[LoadOptions, Any]):
    """stable-diffusion.cpp; serves `image` and `video` tasks of `sd-cpp` model sources."""

    name = "sdcpp"
    free_at_exit = True

    def __init__(
        self, *, n_threads: int | None = None, max_input_bytes: int = MAX_INPUT_BYTES
    ) -> None:
        self._n_threads = n_threads or _default_threads()
        self.max_input_bytes = max_input_bytes
        super().__init__()

    # -- roster ---------------------------------------------------------------------------

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return {TaskKind.IMAGE: [WILDCARD], TaskKind.VIDEO: [WILDCARD]}

    # -- residency ------------------------------------------------------------------------

    @property
    def loaded(self) -> LoadOptions | None:
        """The options of the resident context, if any."""
        return self._key

    @property
    def _sd(self) -> Any:
        """The resident context, if any."""
        return self._held[1] if self._held is not None else None

    def _files(self, key: LoadOptions) -> list[Path]:
        return key.paths

    def _close(self, model: Any) -> None:
        model.close()

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> None:
        options = load_options(
            source.files, model_paths, source.cli_defaults, n_threads=self._n_threads
        )
        with self._lock:
            self._ensure(options, ThrottledProgress(no_progress))

    def _ensure(self, options: LoadOptions, progress: ThrottledProgress) -> Any:
        return self._hold(options, lambda: self._load(options, progress))

    def _load(self, options: LoadOptions, progress: ThrottledProgress) -> Any:
        for path in options.paths:
            if not path.is_file():
                raise JobError(f"model file {path.name} is missing", retryable=True)
        names = ", ".join(options.files)
        progress(0.0, f"loading {names}", force=True)
        from stable_diffusion_cpp import StableDiffusion

        route_native_logs()
        _native_errors.clear()
        started = time.monotonic()
        try:
            sd = StableDiffusion(**options.kwargs(), vae_decode_only=False, verbose=False)
        except Exception as exc:
            raise JobError(f"could not load model {names}: {exc}", retryable=True) from exc
        if not sd._model.model:  # the binding does not notice a NULL context
            sd._model.model = None  # nothing to free (freeing NULL would crash)
            sd.close()
            why = "; ".join(_native_errors) or "stable-diffusion.cpp refused the files"
            raise JobError(f"could not load model {names}: {why}", retryable=True)
        log.info("loaded %s in %.2f s", names, time.monotonic() - started)
        return sd

    # -- a job ----------------------------------------------------------------------------

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        task = claim.task
        if not isinstance(task, ImageTask | VideoTask):
            raise CannotServe(f"sdcpp engine cannot serve {task.kind} tasks")
        cli = claim.model_source.cli_defaults
        options = load_options(
            claim.model_source.files, model_paths, cli, n_threads=self._n_threads
        )
        sample = sample_options(task, cli)
        throttle = ThrottledProgress(progress)
        _check(cancel)
        if isinstance(task, ImageTask):
            strength = strength_of(task)
            inputs = self._fetch_inputs(task, throttle, cancel)
            with self._lock:
                _check(cancel)
                sd = self._ensure(options, throttle)
                image = self._generate(
                    sd,
                    options=options,
                    task=task,
                    sample=sample,
                    seed=_seed(task.seed),
                    inputs=inputs,
                    strength=strength,
                    progress=throttle,
                    cancel=cancel,
                    span=(0.0, 0.95),
                )
            _check(cancel)
            ext = output_ext(task.ext)
            data = encode_image(image, ext)
            throttle(1.0, "done", force=True)
            return BinaryResult(data, ext)
        return self._run_video(task, options, sample, throttle, cancel)

    def _fetch_inputs(
        self, task: ImageTask, progress: ThrottledProgress, cancel: threading.Event
    ) -> _Inputs:
        """Download and decode the task's images; any failure fails the job."""
        ref = init = mask = None
        if task.ref_image_url:
            ref = self._fetch(task.ref_image_url, "reference image", progress, cancel)
            if task.init_image_url:
                log.warning("refImageUrl switches to reference mode: initImageUrl is not used")
        elif task.init_image_url:
            init = self._fetch(task.init_image_url, "init image", progress, cancel)
        if task.mask_url and (ref is not None or init is not None):
            mask = self._fetch(task.mask_url, "mask", progress, cancel).convert("L")
        elif task.mask_url:
            log.warning("maskUrl needs an init or reference image: the mask is not used")
        return _Inputs(
            init=init.convert("RGB") if init is not None else None,
            mask=mask,
            ref=ref.convert("RGB") if ref is not None else None,
        )

    def _fetch(
        self, url: str, what: str, progress: ThrottledProgress, cancel: threading.Event
    ) -> Image.Image:
        _check(cancel)
        progress(0.0, f"fetching {what}", force=True)
        data = fetch_input(
            url, max_bytes=self.max_input_bytes, timeout_s=FETCH_TIMEOUT_S, what=what
        )
        return decode_image(data, what=what, url=url)

    def _generate(
        self,
        sd: Any,
        *,
        options: LoadOptions,
        task: ImageTask | VideoTask,
        sample: SampleOptions,
        seed: int,
        inputs: _Inputs,
        strength: float,
        progress: ThrottledProgress,
        cancel: threading.Event,
        span: tuple[float, float],
        note: str = "",
    ) -> Image.Image:
        """One `generate_image` call; steps report progress within `span`."""
        import stable_diffusion_cpp as sd_cpp
        from PIL import Image

        start, end = span

        def on_step(step: int, steps: int, seconds: float) -> None:
            try:
                if steps > 0 and step > 0:
                    fraction = start + (end - start) * step / steps
                    label = f"{note}step {step}/{steps}"
                    progress(fraction, label, force=step in (1, steps))
            except Exception:  # an exception cannot cross the native callback
                log.exception("progress callback failed")

        prompt = " ".join([clean_prompt(task.prompt), *options.loras]).strip()
        extra: dict[str, Any] = {}
        if sample.sample_method is not None:
            extra["sample_method"] = _sampler(sample.sample_method)
        if sample.flow_shift is not None:
            extra["flow_shift"] = sample.flow_shift
        if inputs.ref is not None:
            extra["ref_images"] = [inputs.ref]
        if inputs.init is not None:
            extra["init_image"] = inputs.init
            extra["strength"] = strength
        if inputs.mask is not None:
            extra["mask_image"] = inputs.mask
        _check(cancel)
        _native_errors.clear()
        try:
            images = sd.generate_image(
                prompt=prompt,
                negative_prompt=task.negative_prompt or "",
                width=sample.width,
                height=sample.height,
                cfg_scale=sample.cfg_scale,
                sample_steps=sample.steps,
                seed=seed,
                progress_callback=on_step,
                **extra,
            )
        except ValueError as exc:  # the binding's own argument checks
            raise JobError(f"stable-diffusion.cpp: {exc}", retryable=False) from exc
        finally:
            # the binding's callback object dies with the call: never leave it installed
            sd_cpp.sd_set_progress_callback(None, ctypes.c_void_p(0))
        if not images:
            why = "; ".join(_native_errors) or "no image came back"
            raise JobError(f"stable-diffusion.cpp: {why}", retryable=True)
        image: Image.Image = images[0].convert("RGB")
        if image.size != (sample.width, sample.height):
            image = image.resize((sample.width, sample.height), Image.Resampling.LANCZOS)
        return image

    def _run_video(
        self,
        task: VideoTask,
        options: LoadOptions,
        sample: SampleOptions,
        progress: ThrottledProgress,
        cancel: threading.Event,
    ) -> JobResult:
        plan = plan_video(task, sample.width, sample.height)
        sample = SampleOptions(
            plan.width,
            plan.height,
            sample.steps,
            sample.cfg_scale,
            sample.sample_method,
            sample.flow_shift,
        )
        first = _Inputs()
        if task.init_image_url:
            first = _Inputs(
                init=self._fetch(task.init_image_url, "init image", progress, cancel).convert("RGB")
            )
        seed = _seed(None)
        log.info(
            "video: %d frames at %d fps, %d×%d, %s",
            plan.frames,
            plan.fps,
            plan.width,
            plan.height,
            plan.ext,
        )
        frames: list[Image.Image] = []
        share = 0.9 / plan.frames
        with self._lock:
            _check(cancel)
            sd = self._ensure(options, progress)
            for index in range(plan.frames):
                _check(cancel)
                inputs = first if index == 0 else _Inputs(init=frames[-1])
                strength = DEFAULT_STRENGTH if index == 0 else NEXT_FRAME_STRENGTH
                frame = self._generate(
                    sd,
                    options=options,
                    task=task,
                    sample=sample,
                    seed=seed,
                    inputs=inputs,
                    strength=strength,
                    progress=progress,
                    cancel=cancel,
                    span=(index * share, (index + 1) * share),
                    note=f"frame {index + 1}/{plan.frames} ",
                )
                frames.append(frame)
                progress((index + 1) * share, f"frame {index + 1}/{plan.frames}", force=True)
        _check(cancel)
        progress(0.9, f"encoding {plan.ext}", force=True)
        data = encode_video(frames, fps=plan.fps, ext=plan.ext, cancel=cancel)
        progress(1.0, "done", force=True)
        return BinaryResult(data, plan.ext)


def _sampler(name: str) -> str:
    from stable_diffusion_cpp.stable_diffusion import SAMPLE_METHOD_MAP

    wanted = name.strip().lower()
    known = [k for k in SAMPLE_METHOD_MAP if k not in ("default", "sample_method_count")]
    if wanted not in known and wanted != "default":
        raise JobError(
            f"unknown samplingMethod `{name}`: stable-diffusion.cpp knows {', '.join(known)}",
            retryable=False,
        )
    return wanted


def _seed(seed: int | None) -> int:
    """The task's seed, else a random one (logged, so a result can be reproduced)."""
    if seed is not None and seed >= 0:
        log.info("seed %d", seed)
        return seed
    chosen = secrets.randbelow(SEED_LIMIT)
    log.info("seed %d (random)", chosen)
    return chosen


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise JobError("cancelled", retryable=True)
