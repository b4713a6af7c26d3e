"""The images of an sd-cpp job: its input images fetched and decoded, its result encoded.

Inputs (https or loopback http, 32 MiB each) are decoded by their content (Pillow), so a
failed download or an undecodable image fails the job. A result is png, jpg, bmp or webp
(protocol §5.1).
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from studio_worker.domain.results import JobError
from studio_worker.domain.tasks import ImageTask
from studio_worker.engines.base import ThrottledProgress, check_cancel
from studio_worker.engines.inputs import display_url, fetch_input

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 32 * 1024 * 1024
MAX_INPUT_PIXELS = 64 * 1024 * 1024
FETCH_TIMEOUT_S = 60.0
# Output formats (protocol §5.1): png, jpg (for jpg/jpeg), bmp; webp for anything else.
_PILLOW_FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "webp": "WEBP"}
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 92},
    "WEBP": {"quality": 90, "method": 4},
}


@dataclass(frozen=True, slots=True)
class Inputs:
    """The images a generation starts from (none: text to image)."""

    init: Image.Image | None = None
    mask: Image.Image | None = None
    ref: Image.Image | None = None


def fetch_inputs(
    task: ImageTask, max_bytes: int, progress: ThrottledProgress, cancel: threading.Event
) -> Inputs:
    """Download and decode the task's images; any failure fails the job."""
    ref = init = mask = None
    if task.ref_image_url:
        ref = fetch_image(task.ref_image_url, "reference image", max_bytes, progress, cancel)
        if task.init_image_url:
            log.warning("refImageUrl switches to reference mode: initImageUrl is not used")
    elif task.init_image_url:
        init = fetch_image(task.init_image_url, "init image", max_bytes, progress, cancel)
    if task.mask_url and (ref is not None or init is not None):
        mask = fetch_image(task.mask_url, "mask", max_bytes, progress, cancel).convert("L")
    elif task.mask_url:
        log.warning("maskUrl needs an init or reference image: the mask is not used")
    return Inputs(
        init=init.convert("RGB") if init is not None else None,
        mask=mask,
        ref=ref.convert("RGB") if ref is not None else None,
    )


def fetch_image(
    url: str, what: str, max_bytes: int, progress: ThrottledProgress, cancel: threading.Event
) -> Image.Image:
    """One input image, downloaded and decoded."""
    check_cancel(cancel)
    progress(0.0, f"fetching {what}", force=True)
    data = fetch_input(url, max_bytes=max_bytes, timeout_s=FETCH_TIMEOUT_S, what=what)
    return decode_image(data, what=what, url=url)


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
