"""A cached model's files as a job's `modelSource`: the engine families of the OpenAI
routes and the role each file plays for its engine."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from studio_worker.models.store import CachedModel

log = logging.getLogger(__name__)

CHAT_ENGINES = ("llama-cpp",)
STT_ENGINES = ("faster-whisper", "whisper")
TTS_ENGINES = ("piper",)
IMAGE_ENGINES = ("sd-cpp",)
ALL_ENGINES = (*CHAT_ENGINES, *STT_ENGINES, *TTS_ENGINES, *IMAGE_ENGINES)
ROLES_FILE = "roles.json"  # optional `{filename: role}` next to a model's files


def _sd_role(name: str) -> str:
    lower = name.lower()
    if "vae" in lower:
        return "vae"
    if "mmproj" in lower or "vision" in lower:
        return "text-encoder-vision"
    if any(t in lower for t in ("qwen", "llm", "text-encoder", "text_encoder", "t5", "clip")):
        return "text-encoder"
    if any(t in lower for t in ("dit", "diffusion", "unet", "transformer")):
        return "diffusion-model"
    return "model"


def file_role(engine: str, name: str) -> str:
    """The `ModelFile.role` a cached file plays for its engine, guessed from its name."""
    lower = name.lower()
    if engine in CHAT_ENGINES:
        return "mmproj" if "mmproj" in lower else "model"
    if engine in STT_ENGINES:
        return "model" if lower == "model.bin" else "config"
    if engine in TTS_ENGINES:
        return "model" if lower.endswith(".onnx") else "config"
    if engine in IMAGE_ENGINES:
        return _sd_role(name)
    return "model"


def model_source(cached: CachedModel) -> tuple[dict[str, Any], dict[str, Path]]:
    """A wire `modelSource` for the cached files, and their `model_paths`."""
    overrides: dict[str, str] = {}
    roles_file = cached.path / ROLES_FILE
    if roles_file.is_file():
        try:
            loaded = json.loads(roles_file.read_text("utf-8"))
            overrides = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError, AttributeError):
            log.warning("ignoring unreadable %s", roles_file)
    files, paths = [], {}
    for file in cached.files:
        if file.name == ROLES_FILE:
            continue
        path = cached.path / file.name
        role = overrides.get(file.name) or file_role(cached.engine, file.name)
        files.append(
            {"role": role, "url": path.as_uri(), "filename": file.name, "approxBytes": file.size}
        )
        paths[file.name] = path
    return {"engine": cached.engine, "files": files}, paths
