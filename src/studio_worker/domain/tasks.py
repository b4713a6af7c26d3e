"""Job offers, tasks and model sources (protocol §4.3-§5)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.wire import WireModel

PROMPT_PREVIEW_CHARS = 200


class ImageTask(WireModel):
    kind: Literal[TaskKind.IMAGE] = TaskKind.IMAGE
    prompt: str
    negative_prompt: str | None = None
    init_image_url: str | None = None
    mask_url: str | None = None
    ref_image_url: str | None = None
    denoise: float | None = None
    cfg_scale: float | None = None
    sampling_method: str | None = None
    width: int = 512
    height: int = 512
    steps: int = 20
    seed: int | None = None
    ext: str = "webp"


class ChatMessage(WireModel):
    role: str
    content: str = ""


class LlmTask(WireModel):
    kind: Literal[TaskKind.LLM] = TaskKind.LLM
    messages: list[ChatMessage]
    system: str | None = None
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = 0.7
    top_p: float | None = None
    stop: list[str] | None = None
    json_schema: Any = None
    reasoning: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class SttTask(WireModel):
    kind: Literal[TaskKind.AUDIO_STT] = TaskKind.AUDIO_STT
    input_url: str
    language: str | None = None
    translate: bool | None = None
    prompt: str | None = None
    vad: bool | None = None
    timestamps: Literal["segment", "word"] | None = None


class TtsTask(WireModel):
    kind: Literal[TaskKind.AUDIO_TTS] = TaskKind.AUDIO_TTS
    text: str
    voice: str = "default"
    speed: float | None = None
    language: str | None = None
    ext: str = "wav"


class VideoTask(WireModel):
    kind: Literal[TaskKind.VIDEO] = TaskKind.VIDEO
    prompt: str
    negative_prompt: str | None = None
    init_image_url: str | None = None
    seconds: float = 2.0
    fps: int | None = None
    width: int = 512
    height: int = 512
    ext: str = "mp4"


Task = Annotated[
    ImageTask | LlmTask | SttTask | TtsTask | VideoTask,
    Field(discriminator="kind"),
]


class ModelFile(WireModel):
    role: str
    url: str
    filename: str
    approx_bytes: int | None = None
    sha256: str | None = None


class ModelCliDefaults(WireModel):
    # Upstream requires the four numeric keys; we accept them missing as 0 (protocol §4.4).
    cfg_scale: float = 0
    steps: int = 0
    width: int = 0
    height: int = 0
    sampling_method: str | None = None
    flow_shift: float | None = None
    zero_cond_t: bool | None = None
    offload_to_cpu: bool | None = None
    mmap: bool | None = None
    max_vram_gib: float | None = None
    context_size: int | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class ModelSource(WireModel):
    engine: str
    files: list[ModelFile] = Field(default_factory=list)
    cli_defaults: ModelCliDefaults = Field(default_factory=ModelCliDefaults)


class JobOfferClaim(WireModel):
    job_id: str
    game_id: str
    asset_name: str
    model: str
    vram_gb_estimate: float
    task: Task
    model_source: ModelSource


def full_prompt(task: ImageTask | LlmTask | SttTask | TtsTask | VideoTask) -> str:
    """The text sent as the multipart `prompt` and `completeJson.prompt` (protocol §5.7)."""
    match task:
        case ImageTask() | VideoTask():
            return task.prompt
        case LlmTask():
            return task.messages[-1].content if task.messages else ""
        case SttTask():
            return task.input_url
        case TtsTask():
            return task.text


def prompt_preview(text: str) -> str:
    """The 200-character preview for local display only; never sent to the studio."""
    if len(text) <= PROMPT_PREVIEW_CHARS:
        return text
    return text[:PROMPT_PREVIEW_CHARS] + "…"
