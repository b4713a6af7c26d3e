<#
.SYNOPSIS
    studio-worker installer for Windows (no administrator rights needed).

.DESCRIPTION
    irm https://github.com/minis-gg/studio-worker/releases/latest/download/studio-worker-installer.ps1 | iex

    With options (a script block keeps them):
    & ([scriptblock]::Create((irm https://github.com/minis-gg/studio-worker/releases/latest/download/studio-worker-installer.ps1))) -Version 0.6.0 -Service

    Downloads the release archive for this machine (and variant), checks it against the
    release's .sha256 and unpacks it to %LOCALAPPDATA%\studio-worker\<version>\. The file
    current.txt in that folder names the version to run (rewritten in one step; the
    self-updater switches it the same way) and bin\studio-worker.cmd, on the user PATH,
    runs that version. Rerunning upgrades in place: the new version is unpacked beside the
    old one, current.txt is switched, and every older version except the previous one is
    removed. See docs/install.md.

    Environment (the same names as install.sh):
      STUDIO_WORKER_VERSION          same as -Version
      STUDIO_WORKER_VARIANT          auto (default), cpu or cuda
      STUDIO_WORKER_SERVICE          yes, no or ask (default), as -Service / -NoService
      STUDIO_WORKER_DOWNLOAD_BASE    where releases are served (a mirror): the archive is
                                     <base>/v<version>/<asset>, its checksum <asset>.sha256
                                     beside it, and without a version the latest is read
                                     from <base>/latest (a line like v1.2.3)
      STUDIO_WORKER_INSTALL_DIR      default %LOCALAPPDATA%\studio-worker
      STUDIO_WORKER_OS, STUDIO_WORKER_ARCH   instead of the detected OS / CPU
      STUDIO_WORKER_UPDATE=1         set by the updater: no questions, no service changes
      GITHUB_TOKEN                   sent to the GitHub API when looking up the latest release
#>
[CmdletBinding()]
param(
    [string]$Version = $env:STUDIO_WORKER_VERSION,
    [switch]$Cuda,
    [switch]$Cpu,
    [switch]$Service,
    [switch]$NoService,
    [switch]$Force,
    [switch]$NoModifyPath,
    [switch]$Uninstall
)

& {
    Set-StrictMode -Version 3
    $ErrorActionPreference = 'Stop'
    $ProgressPreference = 'SilentlyContinue' # Invoke-WebRequest crawls with the progress bar

    $Repo = 'minis-gg/studio-worker'
    $DefaultDownloadBase = "https://github.com/$Repo/releases/download"
    $LatestApi = "https://api.github.com/repos/$Repo/releases/latest"
    $TaskName = 'studio-worker'
    $ExeName = 'studio-worker.exe'

    function Say([string]$Message) { Write-Host $Message }
    function Warn([string]$Message) { Write-Warning $Message }
    function Fail([string]$Message) { throw $Message }

    function Get-Setting([string]$Name, [string]$Default) {
        $value = [Environment]::GetEnvironmentVariable($Name)
        if ([string]::IsNullOrEmpty($value)) { return $Default }
        return $value
    }

    $Update = (Get-Setting 'STUDIO_WORKER_UPDATE' '0') -eq '1'
    $ServiceMode = Get-Setting 'STUDIO_WORKER_SERVICE' 'ask'
    if ($Service) { $ServiceMode = 'yes' }
    if ($NoService) { $ServiceMode = 'no' }
    if (@('yes', 'no', 'ask') -notcontains $ServiceMode) {
        Fail "STUDIO_WORKER_SERVICE must be yes, no or ask, not '$ServiceMode'"
    }
    $Variant = Get-Setting 'STUDIO_WORKER_VARIANT' 'auto'
    if ($Cuda) { $Variant = 'cuda' }
    if ($Cpu) { $Variant = 'cpu' }
    $DownloadBase = (Get-Setting 'STUDIO_WORKER_DOWNLOAD_BASE' $DefaultDownloadBase).TrimEnd('/')
    $LocalAppData = Get-Setting 'LOCALAPPDATA' (Join-Path $HOME 'AppData\Local')
    $Root = Get-Setting 'STUDIO_WORKER_INSTALL_DIR' (Join-Path $LocalAppData 'studio-worker')
    $Pointer = Join-Path $Root 'current.txt'
    $BinDir = Join-Path $Root 'bin'
    $Shim = Join-Path $BinDir 'studio-worker.cmd'
    # shared by the functions below (a hashtable, so nothing leaks into the caller's session)
    $state = @{ Work = $null; Version = $null; CreatedRoot = $false }

    # -- platform ------------------------------------------------------------------------

    function Get-Triple {
        $os = Get-Setting 'STUDIO_WORKER_OS' ''
        if ($os -eq '') {
            if ([Environment]::OSVersion.Platform -eq [PlatformID]::Win32NT) { $os = 'windows' } else { $os = 'other' }
        }
        if (@('windows', 'Windows', 'Windows_NT') -notcontains $os) {
            Fail "this is not Windows ($os): use install.sh instead: curl -fsSL https://github.com/$Repo/releases/latest/download/studio-worker-installer.sh | sh"
        }
        $arch = Get-Setting 'STUDIO_WORKER_ARCH' ''
        if ($arch -eq '') { $arch = Get-Setting 'PROCESSOR_ARCHITEW6432' '' }
        if ($arch -eq '') { $arch = Get-Setting 'PROCESSOR_ARCHITECTURE' '' }
        switch -Regex ($arch) {
            '^(AMD64|x86_64|x64|amd64)$' { return 'x86_64-pc-windows-msvc' }
            '^(ARM64|arm64|aarch64)$' {
                Fail "unsupported CPU architecture: $arch (the Windows build is x86_64; Windows 11 on Arm can run it emulated: set STUDIO_WORKER_ARCH=x86_64)"
            }
            default { Fail "unsupported CPU architecture: $arch (the Windows build is x86_64)" }
        }
    }

    function Resolve-Variant([string]$Wanted) {
        switch ($Wanted) {
            'cpu' { return 'cpu' }
            'cuda' { return 'cuda' }
            { $_ -eq 'auto' -or $_ -eq '' } {
                $system = Get-Setting 'SystemRoot' 'C:\Windows'
                if (Test-Path -LiteralPath (Join-Path $system 'System32\nvcuda.dll')) { return 'cuda' }
                return 'cpu'
            }
            default { Fail "the variant must be auto, cpu or cuda, not '$Wanted'" }
        }
    }

    # -- downloads -----------------------------------------------------------------------

    function Enable-Tls12 {
        try {
            [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
        } catch {
            Warn 'could not enable TLS 1.2; downloads may fail'
        }
    }

    function Get-Url([string]$Url, [string]$OutFile, [hashtable]$Headers = @{}) {
        if (Test-Path -LiteralPath $OutFile) { Remove-Item -LiteralPath $OutFile -Force }
        try {
            Invoke-WebRequest -Uri $Url -OutFile $OutFile -UseBasicParsing -Headers $Headers
            return $true
        } catch {
            if (Test-Path -LiteralPath $OutFile) { Remove-Item -LiteralPath $OutFile -Force }
            return $false
        }
    }

    function Resolve-Version([string]$Wanted) {
        $tag = $Wanted
        if ([string]::IsNullOrEmpty($tag)) {
            $headers = @{}
            if ($DownloadBase -eq $DefaultDownloadBase) {
                $source = $LatestApi
                $token = Get-Setting 'GITHUB_TOKEN' ''
                if ($token -ne '') { $headers['Authorization'] = "Bearer $token" }
            } else {
                $source = "$DownloadBase/latest"
            }
            $file = Join-Path $state.Work 'latest'
            if (-not (Get-Url $source $file $headers)) {
                Fail "could not look up the latest release at $source; name one with -Version X.Y.Z"
            }
            $text = [IO.File]::ReadAllText($file)
            $match = [regex]::Match($text, '"tag_name"\s*:\s*"([^"]*)"')
            if ($match.Success) {
                $tag = $match.Groups[1].Value
            } else {
                $tag = ($text -split "`r?`n" | Where-Object { $_.Trim() -ne '' } | Select-Object -First 1)
                if ($null -eq $tag) { Fail "$source names no release" }
                $tag = $tag.Trim()
            }
        }
        $v = $tag -replace '^studio-worker-', '' -replace '^v', ''
        if ($v -notmatch '^[0-9][0-9A-Za-z.+-]*$') {
            Fail "not a release version: '$v' (expected e.g. 1.2.3)"
        }
        return $v
    }

    function Test-Checksum([string]$Archive, [string]$Sidecar, [string]$Asset) {
        $line = ([IO.File]::ReadAllText($Sidecar)).Trim()
        $fields = @($line -split '\s+')
        $expected = $fields[0].ToLowerInvariant()
        if ($expected -notmatch '^[0-9a-f]{64}$') {
            Fail "the checksum file $Asset.sha256 is not '<sha256>  <file name>'"
        }
        if ($fields.Count -gt 1) {
            $named = $fields[1].TrimStart('*')
            if ($named -ne $Asset) { Fail "the checksum file $Asset.sha256 is for '$named', not $Asset" }
        }
        $actual = (Get-FileHash -LiteralPath $Archive -Algorithm SHA256).Hash.ToLowerInvariant()
        if ($actual -ne $expected) {
            Fail "checksum mismatch for ${Asset}: the download hashes to $actual but the release publishes $expected (corrupted or tampered download); nothing was installed"
        }
    }

    # -- PATH, junction, service ---------------------------------------------------------

    function Get-UserPath {
        $key = [Microsoft.Win32.Registry]::CurrentUser.OpenSubKey('Environment')
        if ($null -eq $key) { return '' }
        try {
            return [string]$key.GetValue('Path', '', [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
        } finally {
            $key.Close()
        }
    }

    function Set-UserPath([string]$Value) {
        $key = [Microsoft.Win32.Registry]::CurrentUser.CreateSubKey('Environment')
        try {
            $key.SetValue('Path', $Value, [Microsoft.Win32.RegistryValueKind]::ExpandString)
        } finally {
            $key.Close()
        }
        # tell running programs (Explorer, new terminals) that the environment changed
        [Environment]::SetEnvironmentVariable('STUDIO_WORKER_INSTALLER', '1', 'User')
        [Environment]::SetEnvironmentVariable('STUDIO_WORKER_INSTALLER', $null, 'User')
    }

    function Add-ToUserPath([string]$Dir) {
        $parts = @((Get-UserPath) -split ';' | Where-Object { $_ -ne '' })
        if ($parts -contains $Dir) { return }
        Set-UserPath (($parts + $Dir) -join ';')
        $env:Path = "$env:Path;$Dir"
        Say "added $Dir to your PATH (new terminals see it)"
    }

    function Remove-FromUserPath([string]$Dir) {
        $parts = @((Get-UserPath) -split ';' | Where-Object { $_ -ne '' })
        if ($parts -notcontains $Dir) { return }
        Set-UserPath ((@($parts | Where-Object { $_ -ne $Dir })) -join ';')
        Say "removed $Dir from your PATH"
    }

    function Get-CurrentVersion {
        if (-not (Test-Path -LiteralPath $Pointer)) { return $null }
        $text = ([IO.File]::ReadAllText($Pointer)).Trim()
        if ($text -eq '') { return $null }
        return $text
    }

    function Set-CurrentVersion([string]$Name) {
        # one step: ReplaceFile over the old pointer (the updater writes it the same way)
        $tmp = Join-Path $Root ('.current.txt.' + [IO.Path]::GetRandomFileName())
        [IO.File]::WriteAllText($tmp, "$Name`n")
        if (Test-Path -LiteralPath $Pointer) {
            [IO.File]::Replace($tmp, $Pointer, $null)
        } else {
            [IO.File]::Move($tmp, $Pointer)
        }
    }

    function Write-Shim {
        # `studio-worker` on PATH: runs <root>\<version in current.txt>\studio-worker.exe
        New-Item -ItemType Directory -Force -Path $BinDir | Out-Null
        $lines = @(
            '@echo off',
            'setlocal',
            'for /f "usebackq delims=" %%v in ("%~dp0..\current.txt") do set "STUDIO_WORKER_RUNS=%%v"',
            '"%~dp0..\%STUDIO_WORKER_RUNS%\studio-worker.exe" %*',
            'exit /b %ERRORLEVEL%'
        )
        [IO.File]::WriteAllText($Shim, (($lines -join "`r`n") + "`r`n"))
    }

    function Test-TaskInstalled {
        $ErrorActionPreference = 'Continue' # schtasks' stderr is not a script error
        $null = & schtasks.exe /Query /TN $TaskName 2>&1
        return $LASTEXITCODE -eq 0
    }

    function Get-VersionOutput([string]$Exe) {
        $ErrorActionPreference = 'Continue'
        $output = (& $Exe --version 2>&1 | Out-String).Trim()
        return @{ Ok = ($LASTEXITCODE -eq 0); Text = $output }
    }

    function Invoke-ServiceStep([string]$Exe) {
        if ($Update -or $ServiceMode -eq 'no') { return $false }
        if ($ServiceMode -eq 'ask') {
            if (Test-TaskInstalled) {
                Say "refreshing the installed service so it runs $($state.Version)"
            } elseif ([Environment]::UserInteractive -and -not [Console]::IsInputRedirected) {
                $answer = Read-Host 'Start studio-worker at every logon (install-service)? [y/N]'
                if ($answer -notmatch '^[yY]') { return $false }
            } else {
                return $false
            }
        }
        & $Exe install-service
        if ($LASTEXITCODE -ne 0) {
            Warn "the service could not be installed; run 'studio-worker install-service' later, or 'studio-worker run' yourself"
            return $false
        }
        return $true
    }

    # -- install / uninstall -------------------------------------------------------------

    function Install-StudioWorker {
        $triple = Get-Triple
        $variant = Resolve-Variant $Variant
        if ($variant -eq 'cuda' -and $triple -ne 'x86_64-pc-windows-msvc') {
            Fail "there is no CUDA build for $triple"
        }
        Enable-Tls12
        $state.CreatedRoot = -not (Test-Path -LiteralPath $Root)
        New-Item -ItemType Directory -Force -Path $Root | Out-Null
        $state.Work = Join-Path $Root ('.work.' + [IO.Path]::GetRandomFileName())
        New-Item -ItemType Directory -Path $state.Work | Out-Null
        $v = Resolve-Version $Version
        $state.Version = $v
        $previous = Get-CurrentVersion

        $assetBase = "studio-worker-$v-$triple"
        if ($variant -eq 'cuda') { $assetBase = "$assetBase-cuda" }
        $asset = "$assetBase.zip"
        $url = "$DownloadBase/v$v/$asset"
        $dest = Join-Path $Root $v
        $destExe = Join-Path $dest $ExeName
        $marker = Join-Path $dest '.variant'

        $have = (Test-Path -LiteralPath $destExe) -and (Test-Path -LiteralPath $marker) -and
            (([IO.File]::ReadAllText($marker)).Trim() -eq $variant)
        if ($have -and -not $Force) {
            Say "studio-worker $v ($variant) is already installed in $dest"
        } else {
            Say "downloading studio-worker $v ($variant, $triple)"
            Say "  from $url"
            $archive = Join-Path $state.Work $asset
            if (-not (Get-Url $url $archive)) {
                Fail "download failed: $url (no such release or asset, or the network is down)"
            }
            if (-not (Get-Url "$url.sha256" "$archive.sha256")) {
                Fail "download failed: $url.sha256 (every release archive has a checksum beside it)"
            }
            Test-Checksum $archive "$archive.sha256" $asset
            Say 'checksum ok'
            $unpacked = Join-Path $state.Work 'unpacked'
            Expand-Archive -LiteralPath $archive -DestinationPath $unpacked
            $folder = Join-Path $unpacked $assetBase
            if (-not (Test-Path -LiteralPath $folder)) {
                $dirs = @(Get-ChildItem -LiteralPath $unpacked -Directory)
                if ($dirs.Count -ne 1) { Fail "$asset does not hold the folder $assetBase\" }
                $folder = $dirs[0].FullName
            }
            $exe = Join-Path $folder $ExeName
            if (-not (Test-Path -LiteralPath $exe)) { Fail "$asset has no $ExeName in its folder" }
            $probe = Get-VersionOutput $exe
            if (-not $probe.Ok) {
                Fail "the downloaded studio-worker does not run on this machine: $($probe.Text)"
            }
            [IO.File]::WriteAllText((Join-Path $folder '.variant'), $variant)
            if (Test-Path -LiteralPath $dest) {
                try {
                    Rename-Item -LiteralPath $dest -NewName ('.replaced.' + [IO.Path]::GetRandomFileName())
                } catch {
                    Fail "studio-worker $v is running from $dest; stop it first (schtasks /End /TN $TaskName, or close it), then run this again"
                }
            }
            Move-Item -LiteralPath $folder -Destination $dest
        }

        Set-CurrentVersion $v
        Write-Shim
        $state.CreatedRoot = $false

        # keep the new version and the one it replaces; a reinstall prunes nothing
        if ($previous -ne $v) {
            foreach ($dir in @(Get-ChildItem -LiteralPath $Root -Directory)) {
                $name = $dir.Name
                if ($name -eq $v -or $name -eq $previous) { continue }
                if ($name.StartsWith('.')) {
                    if ($name.StartsWith('.replaced.')) { Remove-Item -LiteralPath $dir.FullName -Recurse -Force -ErrorAction SilentlyContinue }
                    continue
                }
                if (-not (Test-Path -LiteralPath (Join-Path $dir.FullName $ExeName))) { continue }
                try {
                    Remove-Item -LiteralPath $dir.FullName -Recurse -Force
                } catch {
                    Warn "could not remove the old version $name (still running?): $($_.Exception.Message)"
                }
            }
        }

        if ($previous -and $previous -ne $v) {
            Say "upgraded studio-worker $previous -> $v ($variant); $previous is kept in $(Join-Path $Root $previous)"
        } else {
            Say "installed studio-worker $v ($variant) in $dest; $Shim runs it"
        }
        if ($Update) { return }

        if ($NoModifyPath) {
            Say "note: $BinDir is not added to your PATH (-NoModifyPath)"
        } else {
            Add-ToUserPath $BinDir
        }
        $serviceNow = Invoke-ServiceStep $destExe
        Say ''
        Say 'next steps:'
        if ($serviceNow) {
            Say '  studio-worker status            # the service runs it now: registration, studio'
        } else {
            Say '  studio-worker run               # register with the studio and take jobs'
            Say '  studio-worker install-service   # or: run it as a service, started at every logon'
        }
        Say '  for a self-hosted studio, first: studio-worker register --api-base-url http://HOST:9790'
        Say 'then approve this worker in the studio (Workers page, pending requests).'
    }

    function Uninstall-StudioWorker {
        if (-not (Test-Path -LiteralPath $Root)) {
            Say "studio-worker is not installed here (no $Root)"
            Remove-FromUserPath $BinDir
            return
        }
        $running = Get-CurrentVersion
        $exe = $null
        if ($running) { $exe = Join-Path (Join-Path $Root $running) $ExeName }
        if ($ServiceMode -ne 'no' -and $exe -and (Test-Path -LiteralPath $exe)) {
            & $exe uninstall-service
            if ($LASTEXITCODE -ne 0) {
                Warn "could not remove the service; run 'studio-worker uninstall-service' before reinstalling"
            }
        }
        try {
            Remove-Item -LiteralPath $Root -Recurse -Force
        } catch {
            Fail "could not remove $Root (is studio-worker still running? close it and run this again): $($_.Exception.Message)"
        }
        Remove-FromUserPath $BinDir
        Say "removed studio-worker ($Root)"
        $appData = Get-Setting 'APPDATA' (Join-Path $HOME 'AppData\Roaming')
        Say "kept: your configuration and registration ($(Join-Path $appData 'minis\minis-studio-worker')) and"
        Say "downloaded models ($(Join-Path $HOME 'models') unless models_root says otherwise); delete them by hand to remove everything."
    }

    $failed = $false
    try {
        if ($Uninstall) { Uninstall-StudioWorker } else { Install-StudioWorker }
    } catch {
        Write-Host "error: $($_.Exception.Message)" -ForegroundColor Red
        $failed = $true
    } finally {
        if ($state.Work -and (Test-Path -LiteralPath $state.Work)) {
            Remove-Item -LiteralPath $state.Work -Recurse -Force -ErrorAction SilentlyContinue
        }
        # a failed first install leaves no empty folder behind
        if ($state.CreatedRoot -and (Test-Path -LiteralPath $Root) -and
            @(Get-ChildItem -LiteralPath $Root -Force).Count -eq 0) {
            Remove-Item -LiteralPath $Root -Force -ErrorAction SilentlyContinue
        }
    }
    # run as a file (powershell -File, as the updater does): the exit status says it failed;
    # piped into iex: never exit, that would close the user's window
    if ($failed -and $PSCommandPath) { exit 1 }
}
