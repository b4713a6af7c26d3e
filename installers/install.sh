#!/bin/sh
# studio-worker installer for Linux and macOS (POSIX sh, no root needed).
#
#   curl -fsSL https://github.com/minis-gg/studio-worker/releases/latest/download/studio-worker-installer.sh | sh
#   curl -fsSL …/studio-worker-installer.sh | sh -s -- --version 0.6.0 --service
#   sh install.sh --uninstall
#
# Downloads the release archive for this OS and CPU (and variant), checks it against the
# release's .sha256 and unpacks it to ~/.local/share/studio-worker/<version>/. The link
# <that folder>/current -> <version> is switched in one atomic rename (the self-updater
# switches the same link), and ~/.local/bin/studio-worker points at
# current/studio-worker. Rerunning upgrades in place: the new version is unpacked beside
# the old one, `current` is switched, and every older version except the previous one is
# removed. See docs/install.md.

set -eu

REPO="minis-gg/studio-worker"
DEFAULT_DOWNLOAD_BASE="https://github.com/$REPO/releases/download"
LATEST_API="https://api.github.com/repos/$REPO/releases/latest"
MARKER="# added by the studio-worker installer"

usage() {
    cat <<'EOF'
studio-worker installer (Linux, macOS)

usage: install.sh [options]
       curl -fsSL <url>/studio-worker-installer.sh | sh -s -- [options]

options:
  --version X.Y.Z    install this release (default: the latest)
  --cuda | --cpu     the CUDA build (x86_64 Linux) or the CPU build
                     (default: CUDA when an NVIDIA driver is found, else CPU)
  --service          run `studio-worker install-service` afterwards (start at login)
  --no-service       do not install or refresh the service
                     (default: refresh an installed one; else ask when interactive)
  --force            reinstall the same version; replace a studio-worker in the bin
                     folder that this installer did not put there
  --no-modify-path   do not add the bin folder to PATH in your shell profile
  --uninstall        remove the service, the link and every installed version
                     (configuration, registration and models are kept)
  -h, --help         this text

environment:
  STUDIO_WORKER_VERSION          same as --version
  STUDIO_WORKER_VARIANT          auto (default), cpu or cuda
  STUDIO_WORKER_SERVICE          yes, no or ask (default), as --service / --no-service
  STUDIO_WORKER_DOWNLOAD_BASE    where releases are served (a mirror): the archive is
                                 <base>/v<version>/<asset>, its checksum <asset>.sha256
                                 beside it, and without --version the latest version
                                 is read from <base>/latest (a line like v1.2.3)
                                 (default: https://github.com/minis-gg/studio-worker/releases/download)
  STUDIO_WORKER_INSTALL_DIR      versions go here (default: ~/.local/share/studio-worker)
  STUDIO_WORKER_BIN_DIR          the link goes here (default: ~/.local/bin)
  STUDIO_WORKER_OS, STUDIO_WORKER_ARCH
                                 use instead of `uname -s` / `uname -m` (e.g. arm64
                                 under Rosetta, or to test)
  STUDIO_WORKER_UPDATE=1         set by the updater: no questions, no service changes
  GITHUB_TOKEN                   sent to the GitHub API when looking up the latest release
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# -- options ------------------------------------------------------------------------------

VERSION=${STUDIO_WORKER_VERSION:-}
VARIANT=${STUDIO_WORKER_VARIANT:-auto}
SERVICE=${STUDIO_WORKER_SERVICE:-ask}
UPDATE=${STUDIO_WORKER_UPDATE:-0}
ACTION=install
FORCE=0
MODIFY_PATH=1

while [ $# -gt 0 ]; do
    case $1 in
        --version)
            [ $# -ge 2 ] || die "--version needs a value (e.g. --version 1.2.3)"
            VERSION=$2
            shift
            ;;
        --version=*) VERSION=${1#*=} ;;
        --cuda) VARIANT=cuda ;;
        --cpu) VARIANT=cpu ;;
        --variant)
            [ $# -ge 2 ] || die "--variant needs a value (auto, cpu or cuda)"
            VARIANT=$2
            shift
            ;;
        --variant=*) VARIANT=${1#*=} ;;
        --service) SERVICE=yes ;;
        --no-service) SERVICE=no ;;
        --force) FORCE=1 ;;
        --no-modify-path) MODIFY_PATH=0 ;;
        --uninstall) ACTION=uninstall ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

case $SERVICE in
    yes | no | ask) ;;
    *) die "STUDIO_WORKER_SERVICE must be yes, no or ask, not '$SERVICE'" ;;
esac

[ -n "${HOME:-}" ] || die "HOME is not set: cannot tell where to install for this user"

DOWNLOAD_BASE=${STUDIO_WORKER_DOWNLOAD_BASE:-$DEFAULT_DOWNLOAD_BASE}
DOWNLOAD_BASE=${DOWNLOAD_BASE%/}
case ${XDG_DATA_HOME:-} in
    /*) DATA_HOME=$XDG_DATA_HOME ;;
    *) DATA_HOME=$HOME/.local/share ;;
esac
INSTALL_DIR=${STUDIO_WORKER_INSTALL_DIR:-$DATA_HOME/studio-worker}
BIN_DIR=${STUDIO_WORKER_BIN_DIR:-$HOME/.local/bin}
LINK=$BIN_DIR/studio-worker
CURRENT=$INSTALL_DIR/current

# -- helpers ------------------------------------------------------------------------------

WORK=
CREATED_INSTALL_DIR=0
cleanup() {
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    if [ "$CREATED_INSTALL_DIR" = 1 ]; then rmdir "$INSTALL_DIR" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

interactive() {
    [ "$UPDATE" != 1 ] && [ -t 2 ] && (: </dev/tty) 2>/dev/null
}

ask_yes() {
    printf '%s [y/N] ' "$1" >/dev/tty
    answer=
    read -r answer </dev/tty || answer=
    case $answer in
        [yY]*) return 0 ;;
        *) return 1 ;;
    esac
}

# The version `current` points at (`current -> <version>`), empty when none.
current_version() {
    [ -L "$CURRENT" ] || return 0
    target=$(readlink "$CURRENT" 2>/dev/null) || return 0
    printf '%s\n' "${target##*/}"
}

# Point `current` at $1 with one rename (mv -T on GNU, -h on BSD/macOS: replace the link
# itself instead of moving into the folder it points at).
switch_current() {
    if [ -d "$CURRENT" ] && [ ! -L "$CURRENT" ]; then
        die "$CURRENT is a folder, not a link: remove it and run this again"
    fi
    rm -f "$INSTALL_DIR/.current.new"
    ln -s "$1" "$INSTALL_DIR/.current.new"
    if ! mv -T "$INSTALL_DIR/.current.new" "$CURRENT" 2>/dev/null &&
        ! mv -h "$INSTALL_DIR/.current.new" "$CURRENT" 2>/dev/null; then
        rm -f "$CURRENT"
        mv "$INSTALL_DIR/.current.new" "$CURRENT"
    fi
}

link_is_ours() {
    [ -L "$LINK" ] || return 1
    target=$(readlink "$LINK" 2>/dev/null) || return 1
    case $target in
        "$INSTALL_DIR"/*) return 0 ;;
        *) return 1 ;;
    esac
}

# -- platform -----------------------------------------------------------------------------

has_nvidia_driver() {
    for lib in /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib64/libcuda.so.1 \
        /usr/lib/libcuda.so.1 /usr/lib/wsl/lib/libcuda.so.1; do
        [ -e "$lib" ] && return 0
    done
    for ldconfig in ldconfig /sbin/ldconfig; do
        if command -v "$ldconfig" >/dev/null 2>&1; then
            "$ldconfig" -p 2>/dev/null | grep -q 'libcuda\.so\.1' && return 0
            return 1
        fi
    done
    return 1
}

detect_target() {
    os=${STUDIO_WORKER_OS:-$(uname -s)}
    arch=${STUDIO_WORKER_ARCH:-$(uname -m)}
    case $os in
        Linux | linux) os=linux ;;
        Darwin | darwin | macos | macOS) os=darwin ;;
        MINGW* | MSYS* | CYGWIN* | Windows_NT | windows)
            die "this is Windows: use the PowerShell installer instead: irm https://github.com/$REPO/releases/latest/download/studio-worker-installer.ps1 | iex"
            ;;
        *) die "unsupported operating system: $os (studio-worker is built for Linux, macOS and Windows)" ;;
    esac
    case $arch in
        x86_64 | amd64 | x64) arch=x86_64 ;;
        aarch64 | arm64 | armv8*) arch=aarch64 ;;
        *) die "unsupported CPU architecture: $arch on $os (studio-worker is built for x86_64 and aarch64/arm64)" ;;
    esac
    if [ "$os" = darwin ] && [ "$arch" = x86_64 ] && [ -z "${STUDIO_WORKER_ARCH:-}" ] &&
        [ "$(sysctl -n sysctl.proc_translated 2>/dev/null || true)" = 1 ]; then
        arch=aarch64 # a shell under Rosetta on Apple silicon: take the native build
    fi
    if [ "$os" = linux ] && [ -z "${STUDIO_WORKER_OS:-}" ] &&
        { ldd --version 2>&1 || true; } | grep -qi musl; then
        die "unsupported C library: musl (e.g. Alpine); the Linux builds need glibc"
    fi
    case $os in
        linux) TRIPLE=$arch-unknown-linux-gnu ;;
        darwin) TRIPLE=$arch-apple-darwin ;;
    esac
    case $VARIANT in
        cpu) ;;
        cuda)
            [ "$TRIPLE" = x86_64-unknown-linux-gnu ] ||
                die "there is no CUDA build for $TRIPLE (CUDA builds: x86_64 Linux and Windows); use --cpu"
            ;;
        auto | "")
            if [ "$TRIPLE" = x86_64-unknown-linux-gnu ] && has_nvidia_driver; then
                VARIANT=cuda
            else
                VARIANT=cpu
            fi
            ;;
        *) die "the variant must be auto, cpu or cuda, not '$VARIANT'" ;;
    esac
}

# -- downloads ----------------------------------------------------------------------------

pick_downloader() {
    if command -v curl >/dev/null 2>&1; then
        DOWNLOADER=curl
    elif command -v wget >/dev/null 2>&1; then
        DOWNLOADER=wget
    else
        die "neither curl nor wget was found: install one of them (e.g. 'sudo apt-get install curl') and run this again"
    fi
}

# download URL FILE [progress]: 0 on success; never leaves a partial FILE behind.
download() {
    rm -f "$2"
    if [ "$DOWNLOADER" = curl ]; then
        if [ "${3:-}" = progress ] && [ -t 2 ]; then
            curl --fail --location --retry 3 --connect-timeout 30 --progress-bar --output "$2" "$1" || {
                rm -f "$2"
                return 1
            }
        else
            curl --fail --silent --show-error --location --retry 3 --connect-timeout 30 \
                --output "$2" "$1" || {
                rm -f "$2"
                return 1
            }
        fi
    else
        wget -q -T 30 -O "$2" "$1" || {
            rm -f "$2"
            return 1
        }
    fi
}

download_api() {
    if [ -z "${GITHUB_TOKEN:-}" ]; then
        download "$1" "$2"
        return
    fi
    rm -f "$2"
    if [ "$DOWNLOADER" = curl ]; then
        curl --fail --silent --show-error --location --retry 3 \
            --header "Authorization: Bearer $GITHUB_TOKEN" --output "$2" "$1"
    else
        wget -q -T 30 --header="Authorization: Bearer $GITHUB_TOKEN" -O "$2" "$1"
    fi
}

resolve_version() {
    if [ -z "$VERSION" ]; then
        if [ "$DOWNLOAD_BASE" = "$DEFAULT_DOWNLOAD_BASE" ]; then
            source=$LATEST_API
        else
            source=$DOWNLOAD_BASE/latest
        fi
        download_api "$source" "$WORK/latest" ||
            die "could not look up the latest release at $source; name one with --version X.Y.Z"
        tag=$(sed -n 's/.*"tag_name"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$WORK/latest" | head -n 1)
        if [ -z "$tag" ]; then
            tag=$(sed -n '/[^[:space:]]/{s/^[[:space:]]*//;s/[[:space:]]*$//;p;q;}' "$WORK/latest")
        fi
        [ -n "$tag" ] || die "$source names no release"
        VERSION=$tag
    fi
    VERSION=${VERSION#studio-worker-}
    VERSION=${VERSION#v}
    case $VERSION in
        [0-9]*) ;;
        *) die "not a release version: '$VERSION' (expected e.g. 1.2.3)" ;;
    esac
    case $VERSION in
        *[!0-9A-Za-z.+-]*) die "not a release version: '$VERSION' (expected e.g. 1.2.3)" ;;
    esac
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1"
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1"
    elif command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 -r "$1"
    else
        return 127
    fi
}

verify() { # archive sidecar asset
    expected=
    named=
    read -r expected named <"$2" || [ -n "$expected" ] ||
        die "the checksum file $3.sha256 is empty"
    expected=$(printf '%s' "$expected" | tr 'A-F' 'a-f')
    case $expected in
        *[!0-9a-f]*) die "the checksum file $3.sha256 is not '<sha256>  <file name>'" ;;
    esac
    [ ${#expected} -eq 64 ] || die "the checksum file $3.sha256 is not '<sha256>  <file name>'"
    named=${named#\*}
    if [ -n "$named" ] && [ "$named" != "$3" ]; then
        die "the checksum file $3.sha256 is for '$named', not $3"
    fi
    line=$(sha256_of "$1") ||
        die "no SHA-256 tool found (sha256sum, shasum or openssl): cannot verify the download"
    actual=${line%% *}
    actual=${actual#\\}
    if [ "$actual" != "$expected" ]; then
        die "checksum mismatch for $3: the download hashes to $actual but the release publishes $expected (corrupted or tampered download); nothing was installed"
    fi
}

# -- PATH ---------------------------------------------------------------------------------

add_path_line() {
    if [ -f "$1" ] && grep -qF "$MARKER" "$1"; then return 0; fi
    if [ -s "$1" ] && [ -n "$(tail -c 1 "$1")" ]; then printf '\n' >>"$1"; fi
    printf '%s\n' "export PATH=\"$BIN_DIR:\$PATH\" $MARKER" >>"$1"
    say "added $BIN_DIR to PATH in $1"
}

ensure_on_path() {
    case ":${PATH:-}:" in
        *":$BIN_DIR:"*) return 0 ;;
    esac
    if [ "$MODIFY_PATH" != 1 ]; then
        say "note: $BIN_DIR is not on your PATH; add it, e.g.: export PATH=\"$BIN_DIR:\$PATH\""
        return 0
    fi
    # login shells: sh/dash/bash read ~/.profile (bash prefers ~/.bash_profile when it
    # exists), zsh (macOS's default) reads ~/.zprofile
    add_path_line "$HOME/.profile"
    if [ -f "$HOME/.bash_profile" ]; then add_path_line "$HOME/.bash_profile"; fi
    login_shell=${SHELL:-sh}
    if [ -f "$HOME/.zprofile" ] || [ "$os" = darwin ] || [ "${login_shell##*/}" = zsh ]; then
        add_path_line "$HOME/.zprofile"
    fi
    say "open a new terminal (or run: export PATH=\"$BIN_DIR:\$PATH\") to use studio-worker"
}

remove_path_lines() {
    for profile in "$HOME/.profile" "$HOME/.bash_profile" "$HOME/.zprofile"; do
        if [ ! -f "$profile" ] || ! grep -qF "$MARKER" "$profile"; then continue; fi
        grep -vF "$MARKER" "$profile" >"$profile.studio-worker.tmp" || true
        cat "$profile.studio-worker.tmp" >"$profile"
        rm -f "$profile.studio-worker.tmp"
        say "removed the PATH line from $profile"
    done
}

# -- services -----------------------------------------------------------------------------

service_installed() {
    case ${XDG_CONFIG_HOME:-} in
        /*) config_home=$XDG_CONFIG_HOME ;;
        *) config_home=$HOME/.config ;;
    esac
    [ -f "$config_home/systemd/user/studio-worker.service" ] ||
        [ -f "$HOME/Library/LaunchAgents/gg.minis.studio-worker.daemon.plist" ]
}

maybe_service() {
    SERVICE_NOW=0
    [ "$UPDATE" = 1 ] && return 0
    case $SERVICE in
        no) return 0 ;;
        yes) ;;
        ask)
            if service_installed; then
                say "refreshing the installed service so it runs $VERSION"
            elif interactive && ask_yes "Start studio-worker at every login (install-service)?"; then
                :
            else
                return 0
            fi
            ;;
    esac
    if "$LINK" install-service; then
        SERVICE_NOW=1
    else
        warn "the service could not be installed; run 'studio-worker install-service' later, or 'studio-worker run' yourself"
    fi
}

# -- install / uninstall ------------------------------------------------------------------

install() {
    detect_target
    pick_downloader
    if [ ! -d "$INSTALL_DIR" ]; then
        mkdir -p "$INSTALL_DIR" || die "cannot create $INSTALL_DIR"
        CREATED_INSTALL_DIR=1
    fi
    WORK=$(mktemp -d "$INSTALL_DIR/.work.XXXXXX") || die "cannot create a work folder in $INSTALL_DIR"
    resolve_version

    if [ -e "$LINK" ] || [ -L "$LINK" ]; then
        if ! link_is_ours && [ "$FORCE" != 1 ]; then
            die "$LINK exists and was not installed by this installer (an older studio-worker, or a pip --user install?); remove it, or rerun with --force to replace it"
        fi
    fi
    previous=$(current_version)

    asset_base=studio-worker-$VERSION-$TRIPLE
    [ "$VARIANT" = cuda ] && asset_base=$asset_base-cuda
    asset=$asset_base.tar.gz
    url=$DOWNLOAD_BASE/v$VERSION/$asset
    dest=$INSTALL_DIR/$VERSION

    if [ -x "$dest/studio-worker" ] && [ "$(cat "$dest/.variant" 2>/dev/null || true)" = "$VARIANT" ] &&
        [ "$FORCE" != 1 ]; then
        say "studio-worker $VERSION ($VARIANT) is already installed in $dest"
    else
        say "downloading studio-worker $VERSION ($VARIANT, $TRIPLE)"
        say "  from $url"
        download "$url" "$WORK/$asset" progress ||
            die "download failed: $url (no such release or asset, or the network is down)"
        download "$url.sha256" "$WORK/$asset.sha256" ||
            die "download failed: $url.sha256 (every release archive has a checksum beside it)"
        verify "$WORK/$asset" "$WORK/$asset.sha256" "$asset"
        say "checksum ok"
        mkdir "$WORK/unpacked"
        tar -xzf "$WORK/$asset" -C "$WORK/unpacked" || die "could not unpack $asset"
        folder=$WORK/unpacked/$asset_base
        if [ ! -d "$folder" ]; then
            set -- "$WORK/unpacked"/*
            [ $# -eq 1 ] && [ -d "$1" ] || die "$asset does not hold the folder $asset_base/"
            folder=$1
        fi
        [ -f "$folder/studio-worker" ] || die "$asset has no studio-worker executable in its folder"
        chmod +x "$folder/studio-worker"
        if ! "$folder/studio-worker" --version >"$WORK/version.txt" 2>&1; then
            die "the downloaded studio-worker does not run on this machine: $(head -n 3 "$WORK/version.txt")"
        fi
        printf '%s\n' "$VARIANT" >"$folder/.variant"
        if [ -e "$dest" ]; then mv "$dest" "$WORK/replaced"; fi
        mv "$folder" "$dest"
    fi
    CREATED_INSTALL_DIR=0

    switch_current "$VERSION"
    mkdir -p "$BIN_DIR" || die "cannot create $BIN_DIR"
    if [ "$(readlink "$LINK" 2>/dev/null || true)" != "$CURRENT/studio-worker" ]; then
        rm -f "$BIN_DIR/.studio-worker.new"
        ln -s "$CURRENT/studio-worker" "$BIN_DIR/.studio-worker.new"
        mv -f "$BIN_DIR/.studio-worker.new" "$LINK"
    fi

    # keep the new version and the one it replaces (a rollback is one --version away);
    # a reinstall of the same version prunes nothing
    if [ "$previous" != "$VERSION" ]; then
        for old in "$INSTALL_DIR"/*; do
            [ -d "$old" ] && [ ! -L "$old" ] && [ -e "$old/studio-worker" ] || continue
            name=${old##*/}
            if [ "$name" != "$VERSION" ] && [ "$name" != "$previous" ]; then
                rm -rf "$old"
            fi
        done
    fi

    if [ -n "$previous" ] && [ "$previous" != "$VERSION" ]; then
        say "upgraded studio-worker $previous -> $VERSION ($VARIANT); $previous is kept in $INSTALL_DIR/$previous"
    else
        say "installed studio-worker $VERSION ($VARIANT) in $dest; $LINK runs it"
    fi
    [ "$UPDATE" = 1 ] && return 0

    ensure_on_path
    maybe_service
    say ""
    say "next steps:"
    if [ "$SERVICE_NOW" = 1 ]; then
        say "  studio-worker status            # the service runs it now: registration, studio"
    else
        say "  studio-worker run               # register with the studio and take jobs"
        say "  studio-worker install-service   # or: run it as a service, started at every login"
    fi
    say "  for a self-hosted studio, first: studio-worker register --api-base-url http://HOST:9790"
    say "then approve this worker in the studio (Workers page, pending requests)."
}

uninstall() {
    found=0
    if link_is_ours || [ -d "$INSTALL_DIR" ]; then found=1; fi
    if [ "$found" = 0 ]; then
        say "studio-worker is not installed here (no $LINK link, no $INSTALL_DIR)"
        remove_path_lines
        return 0
    fi
    if [ "$SERVICE" != no ] && link_is_ours && [ -x "$LINK" ]; then
        "$LINK" uninstall-service || warn "could not remove the service; run 'studio-worker uninstall-service' before reinstalling"
    fi
    if link_is_ours; then rm -f "$LINK"; fi
    rm -rf "$INSTALL_DIR"
    remove_path_lines
    say "removed studio-worker ($INSTALL_DIR and $LINK)"
    if [ "$(uname -s)" = Darwin ]; then
        config_dir="$HOME/Library/Application Support/gg.minis.minis-studio-worker"
    else
        case ${XDG_CONFIG_HOME:-} in
            /*) config_dir=$XDG_CONFIG_HOME/minis-studio-worker ;;
            *) config_dir=$HOME/.config/minis-studio-worker ;;
        esac
    fi
    say "kept: your configuration and registration ($config_dir) and downloaded models"
    say "($HOME/models unless models_root says otherwise); delete them by hand to remove everything."
}

if [ "$ACTION" = uninstall ]; then
    uninstall
else
    install
fi
