"""The sd-cpp engine: image and video jobs on stable-diffusion.cpp, in process.

Serves `image` (protocol §5.1) and `video` (§5.5) tasks of `modelSource.engine == "sd-cpp"`
through the stable-diffusion-cpp-python binding. The binding is imported only when a model
is loaded: the parent process builds this class just to read `models_per_kind()`. How the
model files and `cliDefaults` become its arguments: `sd_params.py`.

A job fetches its input images (https or loopback http, 32 MiB each) and decodes them by
their content (Pillow, `image_io.py`), so a failed download or an undecodable image fails
the job; it never falls back to text-to-image. The last loaded context stays resident for
the next job with the same files and load options. stable-diffusion.cpp has no way to stop
a running generation: a cancel lands before or after one (a video: between frames); the
engine host stops the process when a cancel is ignored too long.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import BinaryResult, CannotServe, JobError, JobResult
from studio_worker.domain.tasks import ImageTask, JobOfferClaim, ModelSource, VideoTask
from studio_worker.engines.base import Progress, ThrottledProgress, check_cancel, no_progress
from studio_worker.engines.image_io import (
    MAX_INPUT_BYTES,
    Inputs,
    encode_image,
    fetch_image,
    fetch_inputs,
    output_ext,
)
from studio_worker.engines.resident import Residency
from studio_worker.engines.sd_params import (
    DEFAULT_STRENGTH,
    LoadOptions,
    SampleOptions,
    clean_prompt,
    load_options,
    sample_method,
    sample_options,
    strength_of,
)
from studio_worker.engines.video import NEXT_FRAME_STRENGTH, encode_video, plan_video

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
native_log = logging.getLogger(f"{__name__}.sd_cpp")

WILDCARD = "sd-cpp:*"
SEED_LIMIT = 2**31


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
# The engine
# ---------------------------------------------------------------------------------------


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
        check_cancel(cancel)
        if isinstance(task, ImageTask):
            strength = strength_of(task)
            inputs = fetch_inputs(task, self.max_input_bytes, throttle, cancel)
            with self._lock:
                check_cancel(cancel)
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
            check_cancel(cancel)
            ext = output_ext(task.ext)
            data = encode_image(image, ext)
            throttle(1.0, "done", force=True)
            return BinaryResult(data, ext)
        return self._run_video(task, options, sample, throttle, cancel)

    def _generate(
        self,
        sd: Any,
        *,
        options: LoadOptions,
        task: ImageTask | VideoTask,
        sample: SampleOptions,
        seed: int,
        inputs: Inputs,
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
            extra["sample_method"] = sample_method(sample.sample_method)
        if sample.flow_shift is not None:
            extra["flow_shift"] = sample.flow_shift
        if inputs.ref is not None:
            extra["ref_images"] = [inputs.ref]
        if inputs.init is not None:
            extra["init_image"] = inputs.init
            extra["strength"] = strength
        if inputs.mask is not None:
            extra["mask_image"] = inputs.mask
        check_cancel(cancel)
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
        first = Inputs()
        if task.init_image_url:
            first = Inputs(
                init=fetch_image(
                    task.init_image_url, "init image", self.max_input_bytes, progress, cancel
                ).convert("RGB")
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
            check_cancel(cancel)
            sd = self._ensure(options, progress)
            for index in range(plan.frames):
                check_cancel(cancel)
                inputs = first if index == 0 else Inputs(init=frames[-1])
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
        check_cancel(cancel)
        progress(0.9, f"encoding {plan.ext}", force=True)
        data = encode_video(frames, fps=plan.fps, ext=plan.ext, cancel=cancel)
        progress(1.0, "done", force=True)
        return BinaryResult(data, plan.ext)


def _seed(seed: int | None) -> int:
    """The task's seed, else a random one (logged, so a result can be reproduced)."""
    if seed is not None and seed >= 0:
        log.info("seed %d", seed)
        return seed
    chosen = secrets.randbelow(SEED_LIMIT)
    log.info("seed %d (random)", chosen)
    return chosen
