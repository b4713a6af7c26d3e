"""Tray icons drawn with Pillow at run time: one coloured disc per `TrayState`."""

from __future__ import annotations

from PIL import Image, ImageDraw

from studio_worker.desktop.state import TrayState

ICON_SIZE = 64

# RGB fills; green/amber/red as in behaviour §12.6, slate blue for paused (ours).
COLOURS: dict[TrayState, tuple[int, int, int]] = {
    TrayState.IDLE: (46, 160, 67),
    TrayState.BUSY: (230, 155, 20),
    TrayState.PAUSED: (96, 118, 160),
    TrayState.DISCONNECTED: (207, 34, 46),
}


def icon_image(state: TrayState, size: int = ICON_SIZE) -> Image.Image:
    """A transparent square with a filled, dark-rimmed disc; paused adds two bars, so the
    state reads without colour too."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    pad = max(1, size // 16)
    rim = max(1, size // 20)
    draw.ellipse(
        (pad, pad, size - pad - 1, size - pad - 1),
        fill=(*COLOURS[state], 255),
        outline=(20, 20, 20, 255),
        width=rim,
    )
    if state is TrayState.PAUSED:
        bar_w, bar_h = size // 8, size // 3
        top = (size - bar_h) // 2
        for left in (size // 2 - bar_w - bar_w // 2, size // 2 + bar_w // 2):
            draw.rectangle((left, top, left + bar_w, top + bar_h), fill=(255, 255, 255, 255))
    return image
