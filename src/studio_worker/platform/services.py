"""The daemon as an OS service: a systemd `--user` unit, a launchd agent, a logon task.

Three layers, each testable on any OS:

- **Rendering** is pure: `systemd_unit`, `launchd_plist` and `windows_task_xml` turn an
  executable, a config path and a few options into the file's text or bytes.
- **Planning** is pure given a few facts (`ServiceHost`): `install_plan` / `uninstall_plan`
  return the `Step`s (files to write or remove, commands to run) for one OS.
- **Applying** (`apply`) performs the steps with an injectable command runner, so tests
  check the exact commands without running them and `--dry-run` prints them.

Every service runs `<exe> --config <path> run` (the config is always named, so the service
uses the file `install-service` saw, whatever the service manager's environment holds) and
is restarted when the daemon exits with `RESTART_EXIT_CODE` (the updater's "restart me")
or fails, but not when it stops cleanly or with an exit code that needs the operator.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PureWindowsPath
from xml.sax.saxutils import escape as xml_escape

SERVICE_NAME = "studio-worker"
SYSTEMD_UNIT_NAME = f"{SERVICE_NAME}.service"
# Not `gg.minis.studio-worker`: that is the pre-0.4.13 reference agent, which the tray UI
# removes as legacy (behaviour §13.2); the UI's own login item is `…studio-worker-ui`.
LAUNCHD_LABEL = "gg.minis.studio-worker.daemon"
TASK_NAME = SERVICE_NAME

RESTART_EXIT_CODE = 75
"""The daemon's "restart me" exit status (EX_TEMPFAIL), e.g. after the updater swapped the
binary: systemd restarts on it and does not count it as a failure; launchd restarts on any
non-zero exit."""

NO_RESTART_EXIT_CODES = (2, 3)
"""`run` exit statuses where the studio has ended this worker, never retried by systemd:
authentication failed (2: token revoked) and fatal studio error (3: worker deleted,
protocol violation); retrying would only knock on the studio's door every few seconds.
A config error (1) is retried: Python's own crash status is 1 as well, and a crash must
come back; the start limit ends a loop. Mirrors `studio_worker.app`'s EXIT_* (the
platform layer cannot import app); a test keeps the two in step."""

RESTART_DELAY_SECS = 5
START_LIMIT_INTERVAL_SECS = 300
START_LIMIT_BURST = 10
"""More starts than this within the interval (a crash loop) and systemd gives up."""
LAUNCHD_THROTTLE_SECS = 30
TASK_RESTART_INTERVAL = "PT1M"  # the schema's shortest
TASK_RESTART_COUNT = 255  # the schema's most (an unsignedByte)
TASK_KEEPALIVE_INTERVAL = "PT1M"  # the schema's shortest
POWERSHELL = r"%SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe"
CURRENT_POINTER_FILE = "current.txt"
"""Windows installs: `<root>\\current.txt` names the version folder to run (the updater
rewrites it atomically; see platform/updater.py)."""
CURRENT_LINK = "current"
"""POSIX installs: `<root>/current -> <version>`, flipped atomically by the installer and
the updater."""

DESCRIPTION = "studio-worker: generation jobs for a minis.gg or self-hosted studio"
DOCS_URL = "https://github.com/minis-gg/studio-worker/blob/main/docs/install.md"

TASK_NAMESPACE = "http://schemas.microsoft.com/windows/2004/02/mit/task"

# The reference worker's headless services (behaviour §13.2): removed when ours is
# installed, since both would run a daemon on the same config.
LEGACY_SYSTEMD_UNIT_NAME = "minis-studio-worker.service"
LEGACY_LAUNCHD_LABEL = "gg.minis.studio-worker"
LEGACY_TASK_NAME = "MinisStudioWorker"


class ServiceError(Exception):
    """A service cannot be installed or removed here; the message says why."""


# -- rendering ---------------------------------------------------------------------------


def daemon_argv(
    exe: PurePath, config: PurePath | None, launcher_args: Sequence[str] = ()
) -> list[str]:
    """`[exe, *launcher_args, --config, <path>, run]` (`launcher_args`: e.g. `-m studio_worker`
    when the executable is a Python interpreter)."""
    argv = [str(exe), *launcher_args]
    if config is not None:
        argv += ["--config", str(config)]
    return [*argv, "run"]


_SYSTEMD_PLAIN = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:=@"
)


def systemd_quote(word: str, *, executable: bool = False) -> str:
    """One command-line word as systemd reads it back unchanged (systemd.service(5),
    "Command lines"): `%` is a specifier everywhere (`%%`); `$` starts a variable except in
    the executable (`$$`); quotes, backslashes, whitespace and control characters are
    escaped C-style inside double quotes."""
    if "\n" in word and executable:
        raise ServiceError("the executable path contains a line break")
    text = word.replace("%", "%%")
    if not executable:
        text = text.replace("$", "$$")
    if text and all(c in _SYSTEMD_PLAIN or c in "%$" for c in text):
        return text
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def systemd_unit(
    exe: PurePath,
    config: PurePath | None,
    *,
    launcher_args: Sequence[str] = (),
) -> str:
    """A `systemctl --user` unit running the daemon.

    `Restart=on-failure` with `RestartForceExitStatus`/`SuccessExitStatus` = the restart
    code (restarted, logged as a clean exit), `RestartPreventExitStatus` = the statuses
    where the studio has ended this worker (a revoked token is not retried every 5 s),
    and a start limit that ends a crash loop (10 starts in 5 minutes). A clean stop
    (SIGTERM → exit 0) stays stopped. No `network-online.target`: the user manager has
    none, and the daemon reconnects by itself.
    """
    if not exe.is_absolute():
        raise ServiceError(f"the service needs an absolute executable path, not {exe}")
    argv = daemon_argv(exe, config, launcher_args)
    exec_start = " ".join(
        [systemd_quote(argv[0], executable=True), *(systemd_quote(a) for a in argv[1:])]
    )
    lines = [
        "# Written by `studio-worker install-service`; `uninstall-service` removes it.",
        "[Unit]",
        f"Description={DESCRIPTION}",
        f"Documentation={DOCS_URL}",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL_SECS}",
        f"StartLimitBurst={START_LIMIT_BURST}",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        f"RestartSec={RESTART_DELAY_SECS}",
        f"RestartForceExitStatus={RESTART_EXIT_CODE}",
        f"SuccessExitStatus={RESTART_EXIT_CODE}",
        f"RestartPreventExitStatus={' '.join(str(c) for c in NO_RESTART_EXIT_CODES)}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def launchd_plist(
    exe: PurePath,
    config: PurePath | None,
    *,
    log_file: PurePath,
    launcher_args: Sequence[str] = (),
) -> bytes:
    """A LaunchAgent (`~/Library/LaunchAgents/<LAUNCHD_LABEL>.plist`) running the daemon.

    `RunAtLoad` starts it at login; `KeepAlive = {SuccessfulExit: false}` restarts it when
    it exits non-zero (a crash, or the restart code) and leaves a clean stop stopped;
    `ThrottleInterval` spaces restarts (launchd cannot exclude exit codes, so a revoked
    token is retried at most every 30 s). Output goes to `log_file`.
    """
    plist: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": daemon_argv(exe, config, launcher_args),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": LAUNCHD_THROTTLE_SECS,
        "StandardOutPath": str(log_file),
        "StandardErrorPath": str(log_file),
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False)


def _ps_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def windows_launcher(
    exe: PureWindowsPath | PurePath,
    config: PureWindowsPath | PurePath | None,
    *,
    launcher_args: Sequence[str] = (),
    install_root: PureWindowsPath | PurePath | None = None,
) -> tuple[str, str]:
    """The task's `(command, arguments)`: Windows PowerShell, hidden, starting the daemon.

    The hidden PowerShell window hides the console the daemon would otherwise open at
    every logon, and passes the daemon's exit status on. With `install_root` (an
    installers' layout) it starts `<root>\\<version in current.txt>\\<exe name>`, read
    at every start, so the task follows the updater's switches; else `exe` itself.
    """
    words = daemon_argv(exe, config, launcher_args)[1:]
    for word in (str(exe), *words, str(install_root or "")):
        if '"' in word or "\n" in word:
            raise ServiceError(f"cannot pass {word!r} to a scheduled task")
    args = " ".join(_ps_quote(w) for w in words)
    if install_root is not None:
        pick = (
            f"$root = {_ps_quote(str(install_root))}; "
            f"$version = (Get-Content -LiteralPath (Join-Path $root "
            f"{_ps_quote(CURRENT_POINTER_FILE)}) -TotalCount 1).Trim(); "
            f"$exe = Join-Path (Join-Path $root $version) {_ps_quote(exe.name)}; "
        )
    else:
        pick = f"$exe = {_ps_quote(str(exe))}; "
    script = f"{pick}& $exe {args}; exit $LASTEXITCODE"
    return POWERSHELL, f'-NoProfile -NonInteractive -WindowStyle Hidden -Command "{script}"'


def windows_task_xml(
    exe: PureWindowsPath | PurePath,
    config: PureWindowsPath | PurePath | None,
    *,
    user_id: str,
    launcher_args: Sequence[str] = (),
    install_root: PureWindowsPath | PurePath | None = None,
) -> str:
    """A Task Scheduler 1.2 task (`schtasks /Create /XML`) running the daemon at `user_id`'s
    logon, with that user's interactive token and least privilege (no admin); the action
    is `windows_launcher`.

    No time limit (`PT0S`), hidden from the default task list, started late if the logon
    was missed, on battery too. Task Scheduler restarts a task whose start failed
    (`RestartOnFailure`), not one that exited, so a repetition every minute with
    `IgnoreNew` starts the daemon again after it exits (a crash, or the updater's
    `RESTART_EXIT_CODE`); while it runs, the repetition does nothing. The declaration
    says UTF-16: write the string encoded as UTF-16 (`encode("utf-16")`, with its BOM),
    as schtasks expects.
    """
    command, arguments = windows_launcher(
        exe, config, launcher_args=launcher_args, install_root=install_root
    )
    user = xml_escape(user_id)
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="{TASK_NAMESPACE}">
  <RegistrationInfo>
    <Description>{xml_escape(DESCRIPTION)}</Description>
    <URI>\\{TASK_NAME}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <Repetition>
        <Interval>{TASK_KEEPALIVE_INTERVAL}</Interval>
        <StopAtDurationEnd>false</StopAtDurationEnd>
      </Repetition>
      <UserId>{user}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{user}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>true</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure>
      <Interval>{TASK_RESTART_INTERVAL}</Interval>
      <Count>{TASK_RESTART_COUNT}</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{xml_escape(command)}</Command>
      <Arguments>{xml_escape(arguments)}</Arguments>
    </Exec>
  </Actions>
</Task>
"""


# -- planning ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteFile:
    path: Path
    data: bytes

    def describe(self) -> str:
        return f"write {self.path}"


@dataclass(frozen=True)
class MakeDir:
    path: Path

    def describe(self) -> str:
        return f"create folder {self.path}"


@dataclass(frozen=True)
class RemoveFile:
    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    check: bool = True
    """False: a failure is expected where there is nothing to undo (stop a stopped job)."""

    def describe(self) -> str:
        line = f"run {shlex.join(self.argv)}"
        return line if self.check else f"{line}  (failure ignored)"


Step = WriteFile | MakeDir | RemoveFile | Run
Runner = Callable[[Sequence[str]], "tuple[int, str]"]
"""Runs a command; returns its exit status and its combined output."""


def subprocess_runner(argv: Sequence[str]) -> tuple[int, str]:
    """The real runner: waits, captures stdout and stderr together, never raises."""
    try:
        done = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            check=False,
            timeout=120,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found"
    except (OSError, subprocess.SubprocessError) as exc:
        return 126, f"{argv[0]}: {exc}"
    return done.returncode, done.stdout


@dataclass(frozen=True)
class ServiceHost:
    """What planning needs to know about this machine and user."""

    platform: str  # a `sys.platform` value
    home: Path
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int = 0
    exists: Callable[[Path], bool] = Path.exists

    @classmethod
    def current(cls) -> ServiceHost:
        getuid = getattr(os, "getuid", None)
        return cls(
            platform=sys.platform,
            home=Path.home(),
            env=dict(os.environ),
            uid=getuid() if getuid is not None else 0,
        )

    @property
    def kind(self) -> str:
        """`systemd`, `launchd` or `task`."""
        if self.platform.startswith("linux"):
            return "systemd"
        if self.platform == "darwin":
            return "launchd"
        if self.platform in ("win32", "cygwin"):
            return "task"
        raise ServiceError(
            f"no service support on {self.platform}: run `studio-worker run` under your own "
            "supervisor"
        )

    def systemd_user_dir(self) -> Path:
        xdg = self.env.get("XDG_CONFIG_HOME", "")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else self.home / ".config"
        return base / "systemd" / "user"

    def launch_agents_dir(self) -> Path:
        return self.home / "Library" / "LaunchAgents"

    def launchd_log_file(self) -> Path:
        return self.home / "Library" / "Logs" / SERVICE_NAME / "daemon.log"

    def windows_user_id(self) -> str:
        user = self.env.get("USERNAME", "")
        if not user:
            raise ServiceError("USERNAME is not set: cannot name the user the task runs as")
        domain = self.env.get("USERDOMAIN", "")
        return f"{domain}\\{user}" if domain else user


def service_file(host: ServiceHost, config: Path) -> Path:
    """Where the service's definition lives (the Windows XML is only the input to schtasks)."""
    kind = host.kind
    if kind == "systemd":
        return host.systemd_user_dir() / SYSTEMD_UNIT_NAME
    if kind == "launchd":
        return host.launch_agents_dir() / f"{LAUNCHD_LABEL}.plist"
    return config.parent / f"{TASK_NAME}.task.xml"


def _systemctl(*args: str, check: bool = True) -> Run:
    return Run(("systemctl", "--user", *args), check=check)


def _schtasks(*args: str, check: bool = True) -> Run:
    return Run(("schtasks", *args), check=check)


def install_plan(
    host: ServiceHost,
    exe: Path,
    config: Path,
    *,
    launcher_args: Sequence[str] = (),
    legacy_task_present: bool = False,
) -> list[Step]:
    """Steps that install (or refresh) the service and (re)start it on the current binary.

    Idempotent: rerunning after an upgrade rewrites the definition and restarts the
    daemon. The reference worker's legacy service, when present, is stopped and removed
    first (two daemons on one config would fight over its lock).
    """
    kind = host.kind
    target = service_file(host, config)
    steps: list[Step] = []
    if kind == "systemd":
        legacy = host.systemd_user_dir() / LEGACY_SYSTEMD_UNIT_NAME
        if host.exists(legacy):
            steps += [
                _systemctl("disable", "--now", LEGACY_SYSTEMD_UNIT_NAME, check=False),
                RemoveFile(legacy),
            ]
        unit = systemd_unit(exe, config, launcher_args=launcher_args)
        steps += [
            WriteFile(target, unit.encode()),
            _systemctl("daemon-reload"),
            _systemctl("enable", SYSTEMD_UNIT_NAME),
            _systemctl("restart", SYSTEMD_UNIT_NAME),
        ]
    elif kind == "launchd":
        domain = f"gui/{host.uid}"
        legacy = host.launch_agents_dir() / f"{LEGACY_LAUNCHD_LABEL}.plist"
        if host.exists(legacy):
            steps += [
                Run(("launchctl", "bootout", f"{domain}/{LEGACY_LAUNCHD_LABEL}"), check=False),
                RemoveFile(legacy),
            ]
        log_file = host.launchd_log_file()
        plist = launchd_plist(exe, config, log_file=log_file, launcher_args=launcher_args)
        steps += [
            MakeDir(log_file.parent),  # launchd does not create it
            WriteFile(target, plist),
            Run(("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"), check=False),
            Run(("launchctl", "enable", f"{domain}/{LAUNCHD_LABEL}")),
            Run(("launchctl", "bootstrap", domain, str(target))),
        ]
    else:
        if legacy_task_present:
            steps += [
                _schtasks("/End", "/TN", LEGACY_TASK_NAME, check=False),
                _schtasks("/Delete", "/TN", LEGACY_TASK_NAME, "/F", check=False),
            ]
        root = exe.parent.parent
        layout = host.exists(root / CURRENT_POINTER_FILE)
        xml = windows_task_xml(
            exe,
            config,
            user_id=host.windows_user_id(),
            launcher_args=launcher_args,
            install_root=root if layout else None,
        )
        steps += [
            WriteFile(target, xml.encode("utf-16")),
            _schtasks("/Create", "/TN", TASK_NAME, "/XML", str(target), "/F"),
            _schtasks("/End", "/TN", TASK_NAME, check=False),
            _schtasks("/Run", "/TN", TASK_NAME),
        ]
    return steps


def uninstall_plan(host: ServiceHost, config: Path, *, task_present: bool = False) -> list[Step]:
    """Steps that stop and remove the service; empty when none is installed."""
    kind = host.kind
    target = service_file(host, config)
    if kind == "systemd":
        if not host.exists(target):
            return []
        return [
            _systemctl("disable", "--now", SYSTEMD_UNIT_NAME, check=False),
            RemoveFile(target),
            _systemctl("daemon-reload", check=False),
            _systemctl("reset-failed", SYSTEMD_UNIT_NAME, check=False),
        ]
    if kind == "launchd":
        if not host.exists(target):
            return []
        return [
            Run(("launchctl", "bootout", f"gui/{host.uid}/{LAUNCHD_LABEL}"), check=False),
            RemoveFile(target),
        ]
    if not task_present:
        return [RemoveFile(target)] if host.exists(target) else []
    return [
        _schtasks("/End", "/TN", TASK_NAME, check=False),
        _schtasks("/Delete", "/TN", TASK_NAME, "/F"),
        RemoveFile(target),
    ]


def task_present(name: str, runner: Runner) -> bool:
    """Whether a scheduled task of that name exists (`schtasks /Query` succeeds)."""
    status, _ = runner(["schtasks", "/Query", "/TN", name])
    return status == 0


def preflight(host: ServiceHost, runner: Runner) -> None:
    """Refuse early (before any file is written) when the service manager is missing."""
    kind = host.kind
    tool = {"systemd": "systemctl", "launchd": "launchctl", "task": "schtasks"}[kind]
    probe = [tool, "--version"] if kind == "systemd" else [tool, "help"]
    status, _ = runner(probe)
    if status == 127:
        hint = " (no systemd here?)" if kind == "systemd" else ""
        raise ServiceError(
            f"{tool} not found{hint}: run `studio-worker run` under your own supervisor instead"
        )


def locate_executable(
    *,
    argv0: str,
    executable: str,
    compiled: bool,
    which: Callable[[str], str | None],
    windows: bool = False,
) -> tuple[Path, tuple[str, ...]]:
    """The program a service should start, and the arguments that make it studio-worker.

    A compiled (standalone) build is `executable` itself; a pip/venv install is the
    `studio-worker` console script next to the interpreter; without one (a source tree),
    the interpreter with `-m studio_worker`. When the `studio-worker` found on PATH, or
    the path this process was started by, is the same file, that path is used instead of
    the resolved one: the installers' `~/.local/bin/studio-worker` link survives upgrades,
    a versioned folder behind it does not. Next comes an installers' layout's
    `<root>/current/studio-worker`, for the same reason.
    """
    name = "studio-worker.exe" if windows else "studio-worker"
    if compiled:
        real = Path(executable)
    else:
        script = Path(executable).parent / name
        if not script.is_file():
            return Path(os.path.abspath(executable)), ("-m", "studio_worker")
        real = script
    candidates: list[Path] = []
    on_path = which("studio-worker")
    if on_path:
        candidates.append(Path(on_path))
    resolved = Path(os.path.realpath(real))
    current = resolved.parent.parent / CURRENT_LINK
    if current.is_symlink():  # <root>/current/<exe>: follows the updater's switches
        candidates.append(current / resolved.name)
    if os.sep in argv0 or (os.altsep is not None and os.altsep in argv0):
        candidates.append(Path(argv0))
    for candidate in candidates:
        if _same_file(candidate, real):
            return Path(os.path.abspath(candidate)), ()
    return Path(os.path.abspath(real)), ()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- applying ----------------------------------------------------------------------------


def apply(
    steps: Sequence[Step],
    runner: Runner = subprocess_runner,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Perform `steps` in order; a failing checked command raises `ServiceError`."""
    for step in steps:
        if echo is not None:
            echo(step.describe())
        if isinstance(step, WriteFile):
            _write_atomic(step.path, step.data)
        elif isinstance(step, MakeDir):
            step.path.mkdir(parents=True, exist_ok=True)
        elif isinstance(step, RemoveFile):
            step.path.unlink(missing_ok=True)
        else:
            status, output = runner(step.argv)
            if status != 0 and step.check:
                detail = output.strip() or "no output"
                raise ServiceError(f"`{shlex.join(step.argv)}` exited with {status}: {detail}")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
