"""The "run in tray on login" item that starts `studio-worker ui` (behaviour §13.1).

| OS | artefact |
| --- | --- |
| Linux | `$XDG_CONFIG_HOME/autostart/studio-worker-ui.desktop` (XDG autostart entry) |
| macOS | `~/Library/LaunchAgents/gg.minis.studio-worker-ui.plist` (RunAtLoad, no KeepAlive) |
| Windows | `HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run` value `studio-worker-ui` |

The names are the reference worker's, so ours replaces its login item instead of adding
a second tray. They differ from the daemon service of `install-service`
(`platform/services.py`), which runs headless `run`; both may exist (the tray then finds
the daemon lock taken and shows a second daemon is running).

Rendering (`desktop_entry`, `launch_agent_plist`, `run_key_value`) and planning (`plan`)
are pure; `apply` writes files through `platform.services.apply` and the Run value through
`winreg` (Windows only). Synced with the `auto_start` config key at `ui` start and when it
changes, and set by `studio-worker ui --autostart on|off`.
"""

from __future__ import annotations

import contextlib
import logging
import plistlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from studio_worker.platform import services

log = logging.getLogger(__name__)

ENTRY_NAME = "studio-worker-ui"
DESKTOP_FILE = f"{ENTRY_NAME}.desktop"
LAUNCHD_LABEL = "gg.minis.studio-worker-ui"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = ENTRY_NAME
COMMENT = "Start the studio-worker tray and daemon when you log in"


class AutostartError(Exception):
    """The login item cannot be rendered or written; the message says why."""


def ui_argv(exe: PurePath, config: PurePath | None, launcher_args: Sequence[str] = ()) -> list[str]:
    """`[exe, *launcher_args, (--config, <path>), ui]`."""
    argv = [str(exe), *launcher_args]
    if config is not None:
        argv += ["--config", str(config)]
    return [*argv, "ui"]


# -- rendering ---------------------------------------------------------------------------

# Desktop Entry Specification 1.5, "The Exec key": an argument holding any of these is
# quoted; inside quotes ", `, $ and \ take a backslash.
_EXEC_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")


def exec_quote(word: str) -> str:
    """One argument of an `Exec=` line: `%` doubled (field codes), quoted when needed."""
    if any(c in word for c in "\n\r"):
        raise AutostartError(f"cannot start {word!r} from a login item: it has a line break")
    text = word.replace("%", "%%")
    if text and not any(c in _EXEC_RESERVED for c in text):
        return text
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in text)
    return f'"{escaped}"'


def desktop_entry(argv: Sequence[str]) -> str:
    """The XDG autostart entry. The `Exec` value is a string value too, so each backslash
    of the quoted arguments is written twice."""
    exec_line = " ".join(exec_quote(word) for word in argv).replace("\\", "\\\\")
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Name=studio-worker",
            f"Comment={COMMENT}",
            f"Exec={exec_line}",
            "Terminal=false",
            "X-GNOME-Autostart-enabled=true",
            "",
        ]
    )


def launch_agent_plist(argv: Sequence[str]) -> bytes:
    """The macOS login item: started once at login (`RunAtLoad`); not kept alive, so Quit
    in the tray means quit."""
    plist: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        "ProcessType": "Interactive",
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False)


def run_key_value(argv: Sequence[str]) -> str:
    """The Run value: `"<exe>" <args>` with Windows' command-line quoting."""
    exe, *rest = argv
    if '"' in exe:
        raise AutostartError(f"cannot start {exe!r} from the Run key")
    tail = subprocess.list2cmdline(rest)
    return f'"{exe}" {tail}' if tail else f'"{exe}"'


# -- planning ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SetRunValue:
    name: str
    value: str

    def describe(self) -> str:
        return f"set HKCU\\{RUN_KEY}\\{self.name} = {self.value}"


@dataclass(frozen=True)
class DeleteRunValue:
    name: str

    def describe(self) -> str:
        return f"delete HKCU\\{RUN_KEY}\\{self.name}"


Step = services.WriteFile | services.RemoveFile | SetRunValue | DeleteRunValue


def entry_path(host: services.ServiceHost) -> Path | None:
    """Where the login item's file lives; None on Windows (a registry value)."""
    kind = host.kind
    if kind == "systemd":  # any Linux desktop: XDG autostart, systemd or not
        return host.systemd_user_dir().parent.parent / "autostart" / DESKTOP_FILE
    if kind == "launchd":
        return host.launch_agents_dir() / f"{LAUNCHD_LABEL}.plist"
    return None


def plan(host: services.ServiceHost, argv: Sequence[str] | None) -> list[Step]:
    """Steps that make the login item start `argv` (None: remove it). Writing is
    idempotent; removing something absent is a no-op when applied."""
    path = entry_path(host)
    if path is None:
        return (
            [DeleteRunValue(RUN_VALUE)]
            if argv is None
            else [SetRunValue(RUN_VALUE, run_key_value(argv))]
        )
    if argv is None:
        return [services.RemoveFile(path)]
    data = desktop_entry(argv).encode() if host.kind == "systemd" else launch_agent_plist(argv)
    return [services.WriteFile(path, data)]


# -- applying ----------------------------------------------------------------------------


def current_value(host: services.ServiceHost) -> bytes | str | None:
    """What the login item holds now (file bytes or Run value); None when absent."""
    path = entry_path(host)
    if path is not None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
    return _read_run_value(RUN_VALUE)


def apply(steps: Sequence[Step]) -> None:
    """Perform `steps`; raises `AutostartError` (file or registry trouble)."""
    try:
        for step in steps:
            if isinstance(step, SetRunValue | DeleteRunValue):
                _write_run_value(step)
            else:
                services.apply([step])
    except OSError as exc:
        raise AutostartError(f"the login item could not be changed: {exc}") from exc


def sync(host: services.ServiceHost, argv: Sequence[str] | None) -> bool:
    """Make the login item match `argv` (None: absent); True when something changed.
    Logged under `op` enable / disable (ensure when it already matched)."""
    steps = plan(host, argv)
    wanted: bytes | str | None = None
    for step in steps:
        if isinstance(step, services.WriteFile):
            wanted = step.data
        elif isinstance(step, SetRunValue):
            wanted = step.value
    if current_value(host) == wanted:
        log.debug("login item up to date", extra={"op": "ensure"})
        return False
    apply(steps)
    op = "disable" if argv is None else "enable"
    log.info(
        "login item %s: %s",
        "removed" if argv is None else "set",
        "; ".join(step.describe() for step in steps),
        extra={"op": op},
    )
    return True


def _read_run_value(name: str) -> str | None:  # pragma: no cover - Windows only
    import winreg  # type: ignore[import-not-found, unused-ignore]

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:  # type: ignore[attr-defined, unused-ignore]
            value, _ = winreg.QueryValueEx(key, name)  # type: ignore[attr-defined, unused-ignore]
    except FileNotFoundError:
        return None
    return str(value)


def _write_run_value(step: SetRunValue | DeleteRunValue) -> None:  # pragma: no cover - Windows
    import winreg  # type: ignore[import-not-found, unused-ignore]

    with winreg.CreateKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:  # type: ignore[attr-defined, unused-ignore]
        if isinstance(step, SetRunValue):
            winreg.SetValueEx(key, step.name, 0, winreg.REG_SZ, step.value)  # type: ignore[attr-defined, unused-ignore]
        else:
            with contextlib.suppress(FileNotFoundError):
                winreg.DeleteValue(key, step.name)  # type: ignore[attr-defined, unused-ignore]
