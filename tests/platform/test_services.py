"""OS service rendering, planning and applying (studio_worker.platform.services).

Rendering is checked on every OS: the systemd unit with `systemd-analyze verify` where it
exists (and by reading ExecStart back with systemd's documented quoting rules everywhere),
the plist with plistlib, the task XML against the Task Scheduler 1.2 schema's structure
(element names, sequence order, required children, value types and ranges, as published
in Microsoft's schema reference; no XSD validator is needed).
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath

import pytest

from studio_worker import app
from studio_worker.platform import services
from studio_worker.platform.services import (
    LAUNCHD_LABEL,
    RESTART_EXIT_CODE,
    TASK_NAMESPACE,
    MakeDir,
    RemoveFile,
    Run,
    ServiceError,
    ServiceHost,
    WriteFile,
)

NS = f"{{{TASK_NAMESPACE}}}"


class FakeRunner:
    def __init__(self, statuses: dict[tuple[str, ...], int] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.statuses = statuses or {}

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(tuple(argv))
        status = self.statuses.get(tuple(argv), 0)
        return status, "" if status == 0 else f"boom from {argv[0]}\n"


# -- systemd ----------------------------------------------------------------------------


def split_exec(line: str) -> list[str]:
    """ExecStart= words as systemd reads them (systemd.service(5) "Command lines"):
    whitespace splits, double quotes group with C escapes, then `%%` → `%` everywhere and
    `$$` → `$` except in the executable."""
    words: list[str] = []
    i = 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        word = ""
        if line[i] == '"':
            i += 1
            while line[i] != '"':
                if line[i] == "\\":
                    nxt = line[i + 1]
                    if nxt == "x":
                        word += chr(int(line[i + 2 : i + 4], 16))
                        i += 4
                        continue
                    word += {"n": "\n", "t": "\t"}.get(nxt, nxt)
                    i += 2
                    continue
                word += line[i]
                i += 1
            i += 1
        else:
            while i < len(line) and line[i] != " ":
                word += line[i]
                i += 1
        words.append(word)
    out = [w.replace("%%", "%") for w in words]
    return [out[0], *(w.replace("$$", "$") for w in out[1:])]


def unit_values(unit: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_systemd_unit_content() -> None:
    unit = services.systemd_unit(Path("/home/u/.local/bin/studio-worker"), Path("/c/c.toml"))
    values = unit_values(unit)
    assert values["ExecStart"] == ["/home/u/.local/bin/studio-worker --config /c/c.toml run"]
    assert values["Restart"] == ["on-failure"]
    assert values["RestartForceExitStatus"] == [str(RESTART_EXIT_CODE)]
    assert values["SuccessExitStatus"] == [str(RESTART_EXIT_CODE)]
    assert values["RestartPreventExitStatus"] == ["2 3"]
    assert values["StartLimitIntervalSec"] == ["300"]
    assert values["StartLimitBurst"] == ["10"]
    assert values["RestartSec"] == ["5"]
    assert values["WantedBy"] == ["default.target"]
    sections = [line for line in unit.splitlines() if line.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"]


def test_systemd_unit_without_config_and_with_a_launcher() -> None:
    unit = services.systemd_unit(Path("/v/bin/python"), None, launcher_args=["-m", "studio_worker"])
    assert unit_values(unit)["ExecStart"] == ["/v/bin/python -m studio_worker run"]


@pytest.mark.parametrize(
    ("exe", "config"),
    [
        ("/home/a b/.local/bin/studio-worker", "/home/a b/cfg dir/config.toml"),
        ("/opt/100%/studio-worker", "/c/$HOME/100%/x.toml"),
        ('/q/"quoted"/studio-worker', "/back\\slash/tab\there;/c.toml"),
        ("/ü/studio-worker", "/é/config.toml"),
    ],
)
def test_systemd_quoting_reads_back(exe: str, config: str) -> None:
    unit = services.systemd_unit(Path(exe), Path(config))
    (exec_start,) = unit_values(unit)["ExecStart"]
    assert split_exec(exec_start) == [exe, "--config", config, "run"]


def test_systemd_refuses_a_relative_executable() -> None:
    with pytest.raises(ServiceError, match="absolute"):
        services.systemd_unit(Path("studio-worker"), None)


def test_restart_codes_match_the_daemon_exit_codes() -> None:
    assert services.NO_RESTART_EXIT_CODES == (app.EXIT_AUTH_FAILED, app.EXIT_FATAL)
    assert RESTART_EXIT_CODE not in {
        app.EXIT_OK,
        app.EXIT_CONFIG,
        app.EXIT_AUTH_FAILED,
        app.EXIT_FATAL,
        app.EXIT_RECONNECT_CAP,
    }


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("folder", ["bin", "my 100% $odd dir"])
def test_systemd_analyze_verify(tmp_path: Path, folder: str) -> None:
    exe = tmp_path / folder / "studio-worker"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit_file = tmp_path / "units" / services.SYSTEMD_UNIT_NAME
    unit_file.parent.mkdir()
    unit_file.write_text(services.systemd_unit(exe, tmp_path / "cfg dir" / "config.toml"))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    done = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 and "Failed to initialize manager" in done.stderr:
        pytest.skip(f"systemd-analyze cannot start a user manager here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # no warning about any setting either


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_catches_a_missing_executable(tmp_path: Path) -> None:
    """The verify test above would notice a broken unit (guards against a vacuous pass)."""
    unit_file = tmp_path / services.SYSTEMD_UNIT_NAME
    unit_file.write_text(services.systemd_unit(tmp_path / "absent" / "studio-worker", None))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
        check=False,
    )
    if "Failed to initialize manager" in done.stderr:
        pytest.skip("systemd-analyze cannot start a user manager here")
    assert done.returncode != 0
    assert "is not executable" in done.stderr


# -- launchd ----------------------------------------------------------------------------


def test_launchd_plist_parses_and_has_the_keys() -> None:
    data = services.launchd_plist(
        Path("/Users/a b/.local/bin/studio-worker"),
        Path("/Users/a b/Library/Application Support/gg.minis.minis-studio-worker/config.toml"),
        log_file=Path("/Users/a b/Library/Logs/studio-worker/daemon.log"),
    )
    plist = plistlib.loads(data)
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == [
        "/Users/a b/.local/bin/studio-worker",
        "--config",
        "/Users/a b/Library/Application Support/gg.minis.minis-studio-worker/config.toml",
        "run",
    ]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 30
    assert plist["StandardOutPath"] == plist["StandardErrorPath"]
    assert plist["StandardOutPath"].endswith("/Library/Logs/studio-worker/daemon.log")
    assert data.startswith(b"<?xml")


def test_launchd_label_is_not_the_legacy_or_ui_one() -> None:
    assert LAUNCHD_LABEL not in {"gg.minis.studio-worker", "gg.minis.studio-worker-ui"}


# -- Task Scheduler ---------------------------------------------------------------------

BOOL = {"true", "false"}
DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$")

# Children per element, from Microsoft's "Task Scheduler Schema" reference: ("all", names,
# required) for xs:all, ("seq", ordered names, required) for xs:sequence.
SCHEMA: dict[str, tuple[str, Sequence[str], set[str]]] = {
    "Task": (
        "all",
        ["RegistrationInfo", "Triggers", "Settings", "Data", "Principals", "Actions"],
        {"Actions"},
    ),
    "RegistrationInfo": (
        "all",
        [
            "URI",
            "SecurityDescriptor",
            "Source",
            "Date",
            "Author",
            "Version",
            "Description",
            "Documentation",
        ],
        set(),
    ),
    "LogonTrigger": (
        "seq",
        [
            "Enabled",
            "StartBoundary",
            "EndBoundary",
            "Repetition",
            "ExecutionTimeLimit",
            "UserId",
            "Delay",
        ],
        set(),
    ),
    "Repetition": ("all", ["Interval", "Duration", "StopAtDurationEnd"], {"Interval"}),
    "Principals": ("seq", ["Principal"], {"Principal"}),
    "Principal": (
        "all",
        [
            "UserId",
            "LogonType",
            "GroupId",
            "DisplayName",
            "RunLevel",
            "ProcessTokenSidType",
            "RequiredPrivileges",
        ],
        set(),
    ),
    "Settings": (
        "all",
        [
            "AllowStartOnDemand",
            "RestartOnFailure",
            "MultipleInstancesPolicy",
            "DisallowStartIfOnBatteries",
            "StopIfGoingOnBatteries",
            "AllowHardTerminate",
            "StartWhenAvailable",
            "NetworkProfileName",
            "RunOnlyIfNetworkAvailable",
            "WakeToRun",
            "Enabled",
            "Hidden",
            "DeleteExpiredTaskAfter",
            "IdleSettings",
            "NetworkSettings",
            "ExecutionTimeLimit",
            "Priority",
            "RunOnlyIfIdle",
            "UseUnifiedSchedulingEngine",
            "DisallowStartOnRemoteAppSession",
        ],
        set(),
    ),
    "IdleSettings": ("all", ["Duration", "WaitTimeout", "StopOnIdleEnd", "RestartOnIdle"], set()),
    "RestartOnFailure": ("all", ["Interval", "Count"], {"Interval", "Count"}),
    "Exec": ("all", ["Command", "Arguments", "WorkingDirectory"], {"Command"}),
}
TRIGGERS = {
    "BootTrigger",
    "RegistrationTrigger",
    "IdleTrigger",
    "TimeTrigger",
    "EventTrigger",
    "LogonTrigger",
    "SessionStateChangeTrigger",
    "CalendarTrigger",
}
ACTIONS = {"Exec", "ComHandler", "SendEmail", "ShowMessage"}
BOOLEANS = {
    "Enabled",
    "StopAtDurationEnd",
    "AllowStartOnDemand",
    "DisallowStartIfOnBatteries",
    "StopIfGoingOnBatteries",
    "AllowHardTerminate",
    "StartWhenAvailable",
    "RunOnlyIfNetworkAvailable",
    "WakeToRun",
    "Hidden",
    "RunOnlyIfIdle",
    "StopOnIdleEnd",
    "RestartOnIdle",
}
ENUMS = {
    "MultipleInstancesPolicy": {"Parallel", "Queue", "IgnoreNew", "StopExisting"},
    "LogonType": {
        "S4U",
        "Password",
        "InteractiveToken",
        "InteractiveTokenOrPassword",
        "Group",
        "ServiceAccount",
        "None",
    },
    "RunLevel": {"LeastPrivilege", "HighestAvailable"},
}


def minutes(duration: str) -> float:
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", duration)
    assert m, duration
    d, h, mi, s = (int(x or 0) for x in m.groups())
    return d * 1440 + h * 60 + mi + s / 60


def validate_task(root: ET.Element) -> None:
    assert root.tag == f"{NS}Task"
    assert root.get("version") == "1.2"

    def local(el: ET.Element) -> str:
        assert el.tag.startswith(NS), f"{el.tag} is outside the task namespace"
        return el.tag[len(NS) :]

    def check(el: ET.Element) -> None:
        name = local(el)
        children = [local(c) for c in el]
        if name == "Triggers":
            assert set(children) <= TRIGGERS and len(children) <= 48
        elif name == "Actions":
            assert set(children) <= ACTIONS and 1 <= len(children) <= 32
        elif name in SCHEMA:
            kind, allowed, required = SCHEMA[name]
            assert set(children) <= set(allowed), (name, set(children) - set(allowed))
            assert len(children) == len(set(children)), f"{name}: repeated child"
            assert required <= set(children), (name, required - set(children))
            if kind == "seq":
                order = [allowed.index(c) for c in children]
                assert order == sorted(order), f"{name}: children out of schema order"
        else:
            assert children == [], f"{name} should be a leaf"
            text = (el.text or "").strip()
            if name in BOOLEANS:
                assert text in BOOL, (name, text)
            elif name in ENUMS:
                assert text in ENUMS[name], (name, text)
            elif name in {"Interval", "ExecutionTimeLimit", "Duration", "Delay"}:
                assert DURATION.match(text), (name, text)
            elif name in {"UserId", "Command"}:
                assert text, f"{name} must not be empty"
        for child in el:
            check(child)

    check(root)
    restart = root.find(f"{NS}Settings/{NS}RestartOnFailure")
    assert restart is not None
    count = int(restart.findtext(f"{NS}Count", ""))
    assert 1 <= count <= 255  # xs:unsignedByte, minInclusive 1
    assert 1 <= minutes(restart.findtext(f"{NS}Interval", "")) <= 31 * 1440
    repetition = root.find(f"{NS}Triggers/{NS}LogonTrigger/{NS}Repetition")
    if repetition is not None:
        assert 1 <= minutes(repetition.findtext(f"{NS}Interval", "")) <= 31 * 1440
    priority = root.findtext(f"{NS}Settings/{NS}Priority")
    assert priority is None or 0 <= int(priority) <= 10
    principal = root.find(f"{NS}Principals/{NS}Principal")
    actions = root.find(f"{NS}Actions")
    assert principal is not None and actions is not None
    assert actions.get("Context") == principal.get("id")  # IDREF → ID


def task_xml(user: str = "DESKTOP-1\\ana") -> str:
    return services.windows_task_xml(
        PureWindowsPath(
            r"C:\Users\Ana Maria\AppData\Local\studio-worker\current\studio-worker.exe"
        ),
        PureWindowsPath(
            r"C:\Users\Ana Maria\AppData\Roaming\minis\minis-studio-worker\config\config.toml"
        ),
        user_id=user,
    )


def test_task_xml_validates_against_the_schema_structure() -> None:
    text = task_xml()
    assert text.startswith('<?xml version="1.0" encoding="UTF-16"?>')
    root = ET.fromstring(text.encode("utf-16"))  # as schtasks reads the file
    validate_task(root)


def test_task_xml_content() -> None:
    root = ET.fromstring(task_xml("PC\\a&b <x>").encode("utf-16"))
    trigger = root.find(f"{NS}Triggers/{NS}LogonTrigger")
    assert trigger is not None
    assert trigger.findtext(f"{NS}UserId") == "PC\\a&b <x>"
    settings = root.find(f"{NS}Settings")
    assert settings is not None
    assert settings.findtext(f"{NS}ExecutionTimeLimit") == "PT0S"
    assert settings.findtext(f"{NS}Hidden") == "true"
    assert settings.findtext(f"{NS}MultipleInstancesPolicy") == "IgnoreNew"
    assert settings.findtext(f"{NS}DisallowStartIfOnBatteries") == "false"
    principal = root.find(f"{NS}Principals/{NS}Principal")
    assert principal is not None
    assert principal.findtext(f"{NS}LogonType") == "InteractiveToken"
    assert principal.findtext(f"{NS}RunLevel") == "LeastPrivilege"
    assert root.findtext(f"{NS}Actions/{NS}Exec/{NS}Command") == services.POWERSHELL
    arguments = root.findtext(f"{NS}Actions/{NS}Exec/{NS}Arguments") or ""
    assert arguments.startswith("-NoProfile -NonInteractive -WindowStyle Hidden -Command ")
    assert ps_strings(arguments) == [
        "C:\\Users\\Ana Maria\\AppData\\Local\\studio-worker\\current\\studio-worker.exe",
        "--config",
        "C:\\Users\\Ana Maria\\AppData\\Roaming\\minis\\minis-studio-worker\\config\\config.toml",
        "run",
    ]


def ps_strings(text: str) -> list[str]:
    """The single-quoted PowerShell strings in `text`, unescaped (`''` is one quote)."""
    return [m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", text)]


def launcher_script(arguments: str) -> str:
    prefix = '-NoProfile -NonInteractive -WindowStyle Hidden -Command "'
    assert arguments.startswith(prefix) and arguments.endswith('"')
    script = arguments[len(prefix) : -1]
    assert '"' not in script  # one command-line argument, nothing to unescape
    return script


def test_windows_launcher_runs_the_exe_and_passes_its_exit_status() -> None:
    command, arguments = services.windows_launcher(
        PureWindowsPath(r"C:\Users\O'Brien\venv\Scripts\studio-worker.exe"),
        PureWindowsPath(r"C:\Users\O'Brien\cfg\config.toml"),
    )
    assert command == r"%SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe"
    script = launcher_script(arguments)
    assert script == (
        "$exe = 'C:\\Users\\O''Brien\\venv\\Scripts\\studio-worker.exe'; "
        "& $exe '--config' 'C:\\Users\\O''Brien\\cfg\\config.toml' 'run'; exit $LASTEXITCODE"
    )
    assert ps_strings(script)[0] == r"C:\Users\O'Brien\venv\Scripts\studio-worker.exe"


def test_windows_launcher_follows_the_current_pointer_of_an_install() -> None:
    root = PureWindowsPath(r"C:\Users\ana\AppData\Local\studio-worker")
    _, arguments = services.windows_launcher(
        root / "1.2.3" / "studio-worker.exe", PureWindowsPath(r"C:\c.toml"), install_root=root
    )
    script = launcher_script(arguments)
    assert script == (
        "$root = 'C:\\Users\\ana\\AppData\\Local\\studio-worker'; "
        "$version = (Get-Content -LiteralPath (Join-Path $root 'current.txt') -TotalCount 1)"
        ".Trim(); $exe = Join-Path (Join-Path $root $version) 'studio-worker.exe'; "
        "& $exe '--config' 'C:\\c.toml' 'run'; exit $LASTEXITCODE"
    )
    assert "1.2.3" not in script  # the version is read at every start


def test_windows_launcher_refuses_a_double_quote() -> None:
    with pytest.raises(ServiceError, match="scheduled task"):
        services.windows_launcher(PureWindowsPath(r"C:\sw.exe"), PureWindowsPath('C:\\a"b.toml'))


def test_windows_launcher_script_parses_as_powershell() -> None:
    tree_sitter = pytest.importorskip("tree_sitter", reason="tree-sitter not installed")
    grammar = pytest.importorskip(
        "tree_sitter_powershell", reason="tree-sitter-powershell not installed"
    )
    parser = tree_sitter.Parser(tree_sitter.Language(grammar.language()))
    root = PureWindowsPath(r"C:\Users\O'Brien\AppData\Local\studio-worker")
    for install_root in (None, root):
        _, arguments = services.windows_launcher(
            root / "1.0.0" / "studio-worker.exe",
            PureWindowsPath(r"C:\cfg dir\config.toml"),
            install_root=install_root,
        )
        tree = parser.parse(launcher_script(arguments).encode())
        assert not tree.root_node.has_error


def test_the_validator_rejects_schema_violations() -> None:
    """The structural validator is not vacuous: misplaced, unknown and out-of-range fail."""
    good = task_xml()
    broken = [
        good.replace("<Count>255</Count>", "<Count>999</Count>"),
        good.replace("<Hidden>true</Hidden>", "<Hidden>yes</Hidden>"),
        good.replace("<Priority>7</Priority>", "<Colour>7</Colour>"),
        good.replace(
            "<ExecutionTimeLimit>PT0S</ExecutionTimeLimit>",
            "<ExecutionTimeLimit>0</ExecutionTimeLimit>",
        ),
        # UserId before Repetition: the base type's sequence comes first
        re.sub(
            r"(<Enabled>true</Enabled>\s*)(<Repetition>.*?</Repetition>\s*)(<UserId>.*?</UserId>)",
            r"\1\3\2",
            good,
            flags=re.S,
        ),
    ]
    for text in broken:
        assert text != good
        with pytest.raises(AssertionError):
            validate_task(ET.fromstring(text.encode("utf-16")))


# -- planning and applying --------------------------------------------------------------


def host(tmp_path: Path, platform: str, **env: str) -> ServiceHost:
    return ServiceHost(platform=platform, home=tmp_path / "home", env=env, uid=501)


def test_systemd_install_plan(tmp_path: Path) -> None:
    h = host(tmp_path, "linux")
    exe, config = Path("/home/u/.local/bin/studio-worker"), tmp_path / "c.toml"
    steps = services.install_plan(h, exe, config)
    unit_path = tmp_path / "home/.config/systemd/user/studio-worker.service"
    assert steps == [
        WriteFile(unit_path, services.systemd_unit(exe, config).encode()),
        Run(("systemctl", "--user", "daemon-reload")),
        Run(("systemctl", "--user", "enable", "studio-worker.service")),
        Run(("systemctl", "--user", "restart", "studio-worker.service")),
    ]


def test_systemd_honours_an_absolute_xdg_config_home(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    assert services.service_file(host(tmp_path, "linux", XDG_CONFIG_HOME=str(xdg)), Path("/c")) == (
        xdg / "systemd/user/studio-worker.service"
    )
    relative = host(tmp_path, "linux", XDG_CONFIG_HOME="rel")
    assert (
        services.service_file(relative, Path("/c")).parent == tmp_path / "home/.config/systemd/user"
    )


def test_systemd_install_removes_the_legacy_unit_first(tmp_path: Path) -> None:
    h = host(tmp_path, "linux")
    legacy = tmp_path / "home/.config/systemd/user/minis-studio-worker.service"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("[Service]\n")
    steps = services.install_plan(h, Path("/x/studio-worker"), tmp_path / "c.toml")
    assert steps[:2] == [
        Run(
            ("systemctl", "--user", "disable", "--now", "minis-studio-worker.service"), check=False
        ),
        RemoveFile(legacy),
    ]


def test_apply_writes_removes_and_runs_in_order(tmp_path: Path) -> None:
    h = host(tmp_path, "linux")
    runner = FakeRunner()
    config = tmp_path / "cfg" / "config.toml"
    services.apply(services.install_plan(h, Path("/x/studio-worker"), config), runner)
    unit = tmp_path / "home/.config/systemd/user/studio-worker.service"
    assert "ExecStart=/x/studio-worker --config" in unit.read_text()
    assert runner.calls == [
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "studio-worker.service"),
        ("systemctl", "--user", "restart", "studio-worker.service"),
    ]
    # rerun: idempotent (same file, same commands)
    services.apply(services.install_plan(h, Path("/x/studio-worker"), config), runner)
    assert len(runner.calls) == 6
    steps = services.uninstall_plan(h, config)
    services.apply(steps, runner)
    assert not unit.exists()
    assert runner.calls[6:] == [
        ("systemctl", "--user", "disable", "--now", "studio-worker.service"),
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "reset-failed", "studio-worker.service"),
    ]
    assert services.uninstall_plan(h, config) == []  # nothing left to remove


def test_apply_stops_at_a_failing_checked_command(tmp_path: Path) -> None:
    runner = FakeRunner({("systemctl", "--user", "enable", "studio-worker.service"): 1})
    steps = services.install_plan(host(tmp_path, "linux"), Path("/x/sw"), tmp_path / "c.toml")
    with pytest.raises(
        ServiceError, match=r"`systemctl --user enable studio-worker.service` exited with 1: boom"
    ):
        services.apply(steps, runner)
    assert ("systemctl", "--user", "restart", "studio-worker.service") not in runner.calls


def test_apply_ignores_failures_of_unchecked_commands(tmp_path: Path) -> None:
    runner = FakeRunner({("launchctl", "bootout", f"gui/501/{LAUNCHD_LABEL}"): 3})
    steps = services.install_plan(host(tmp_path, "darwin"), Path("/x/sw"), tmp_path / "c.toml")
    services.apply(steps, runner)
    assert (
        "launchctl",
        "bootstrap",
        "gui/501",
        str(tmp_path / f"home/Library/LaunchAgents/{LAUNCHD_LABEL}.plist"),
    ) in runner.calls


def test_launchd_plans(tmp_path: Path) -> None:
    h = host(tmp_path, "darwin")
    config = tmp_path / "c.toml"
    plist = tmp_path / f"home/Library/LaunchAgents/{LAUNCHD_LABEL}.plist"
    logs = tmp_path / "home/Library/Logs/studio-worker"
    steps = services.install_plan(h, Path("/x/sw"), config)
    assert steps == [
        MakeDir(logs),
        WriteFile(
            plist, services.launchd_plist(Path("/x/sw"), config, log_file=logs / "daemon.log")
        ),
        Run(("launchctl", "bootout", f"gui/501/{LAUNCHD_LABEL}"), check=False),
        Run(("launchctl", "enable", f"gui/501/{LAUNCHD_LABEL}")),
        Run(("launchctl", "bootstrap", "gui/501", str(plist))),
    ]
    services.apply(steps, FakeRunner())
    assert logs.is_dir() and plistlib.loads(plist.read_bytes())["Label"] == LAUNCHD_LABEL
    assert services.uninstall_plan(h, config) == [
        Run(("launchctl", "bootout", f"gui/501/{LAUNCHD_LABEL}"), check=False),
        RemoveFile(plist),
    ]


def test_launchd_install_removes_the_legacy_agent(tmp_path: Path) -> None:
    legacy = tmp_path / "home/Library/LaunchAgents/gg.minis.studio-worker.plist"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"")
    steps = services.install_plan(host(tmp_path, "darwin"), Path("/x/sw"), tmp_path / "c.toml")
    assert steps[:2] == [
        Run(("launchctl", "bootout", "gui/501/gg.minis.studio-worker"), check=False),
        RemoveFile(legacy),
    ]


def test_windows_task_plans(tmp_path: Path) -> None:
    h = host(tmp_path, "win32", USERNAME="ana", USERDOMAIN="PC")
    config = tmp_path / "cfg" / "config.toml"
    xml_file = tmp_path / "cfg" / "studio-worker.task.xml"
    steps = services.install_plan(h, Path("/x/studio-worker.exe"), config, legacy_task_present=True)
    assert [s for s in steps if isinstance(s, Run)] == [
        Run(("schtasks", "/End", "/TN", "MinisStudioWorker"), check=False),
        Run(("schtasks", "/Delete", "/TN", "MinisStudioWorker", "/F"), check=False),
        Run(("schtasks", "/Create", "/TN", "studio-worker", "/XML", str(xml_file), "/F")),
        Run(("schtasks", "/End", "/TN", "studio-worker"), check=False),
        Run(("schtasks", "/Run", "/TN", "studio-worker")),
    ]
    services.apply(steps, FakeRunner())
    data = xml_file.read_bytes()
    assert data.startswith(b"\xff\xfe")  # UTF-16 with its BOM, as the declaration says
    validate_task(ET.fromstring(data))
    assert "PC\\ana" in data.decode("utf-16")
    assert services.uninstall_plan(h, config, task_present=True) == [
        Run(("schtasks", "/End", "/TN", "studio-worker"), check=False),
        Run(("schtasks", "/Delete", "/TN", "studio-worker", "/F")),
        RemoveFile(xml_file),
    ]
    xml_file.unlink()
    assert services.uninstall_plan(h, config, task_present=False) == []


def test_windows_task_of_an_installers_layout_follows_current_txt(tmp_path: Path) -> None:
    h = host(tmp_path, "win32", USERNAME="ana")
    root = tmp_path / "studio-worker"
    (root / "1.0.0").mkdir(parents=True)
    (root / "current.txt").write_text("1.0.0\n")
    config = tmp_path / "cfg" / "config.toml"
    steps = services.install_plan(h, root / "1.0.0" / "studio-worker.exe", config)
    xml = next(s for s in steps if isinstance(s, WriteFile)).data.decode("utf-16")
    assert "current.txt" in xml and "1.0.0" not in xml


def test_windows_needs_a_user_name(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="USERNAME"):
        services.install_plan(host(tmp_path, "win32"), Path("/x/sw.exe"), tmp_path / "c.toml")


def test_task_present_asks_schtasks() -> None:
    runner = FakeRunner({("schtasks", "/Query", "/TN", "gone"): 1})
    assert services.task_present("here", runner)
    assert not services.task_present("gone", runner)


def test_unsupported_platform(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="no service support on freebsd14"):
        services.install_plan(host(tmp_path, "freebsd14"), Path("/x/sw"), tmp_path / "c.toml")


def test_preflight_names_the_missing_tool(tmp_path: Path) -> None:
    missing = FakeRunner({("systemctl", "--version"): 127})
    with pytest.raises(ServiceError, match="systemctl not found"):
        services.preflight(host(tmp_path, "linux"), missing)
    services.preflight(host(tmp_path, "linux"), FakeRunner())


def test_subprocess_runner_reports_a_missing_program() -> None:
    status, output = services.subprocess_runner(["studio-worker-no-such-tool-here"])
    assert status == 127 and "command not found" in output
    status, output = services.subprocess_runner(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert status == 3 and "out" in output and "err" in output


# -- which executable a service runs ----------------------------------------------------


def test_compiled_build_prefers_the_stable_link_on_path(tmp_path: Path) -> None:
    real = tmp_path / "share/studio-worker/1.2.3/studio-worker"
    real.parent.mkdir(parents=True)
    real.write_text("")
    link = tmp_path / "bin/studio-worker"
    link.parent.mkdir()
    link.symlink_to(real)
    found = services.locate_executable(
        argv0="studio-worker", executable=str(real), compiled=True, which=lambda _: str(link)
    )
    assert found == (link, ())
    # started by its full link path, with another studio-worker first on PATH
    other = tmp_path / "other/studio-worker"
    other.parent.mkdir()
    other.write_text("")
    found = services.locate_executable(
        argv0=str(link), executable=str(real), compiled=True, which=lambda _: str(other)
    )
    assert found == (link, ())
    # nothing better known: the executable itself
    found = services.locate_executable(
        argv0="x", executable=str(real), compiled=True, which=lambda _: None
    )
    assert found == (real, ())


def test_an_installers_layout_prefers_its_current_link(tmp_path: Path) -> None:
    root = tmp_path / "share/studio-worker"
    real = root / "1.2.3/studio-worker"
    real.parent.mkdir(parents=True)
    real.write_text("")
    (root / "current").symlink_to("1.2.3")
    found = services.locate_executable(
        argv0=str(real), executable=str(real), compiled=True, which=lambda _: None
    )
    assert found == (root / "current/studio-worker", ())


def test_venv_install_uses_the_console_script(tmp_path: Path) -> None:
    python = tmp_path / "venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    script = tmp_path / "venv/bin/studio-worker"
    script.write_text("")
    found = services.locate_executable(
        argv0=str(script), executable=str(python), compiled=False, which=lambda _: None
    )
    assert found == (script, ())


def test_source_tree_falls_back_to_python_dash_m(tmp_path: Path) -> None:
    python = tmp_path / "py/bin/python3"
    python.parent.mkdir(parents=True)
    python.write_text("")
    found = services.locate_executable(
        argv0="-m", executable=str(python), compiled=False, which=lambda _: None
    )
    assert found == (python, ("-m", "studio_worker"))
