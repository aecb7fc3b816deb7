#!/usr/bin/env bash
# The clinic hub's install (./setup.sh --hub runs this): Debian's Mosquitto configured for the
# clinic (TLS with a clinic CA made here, persistence, per-device ACLs, queue limits sized for a
# stated outage), the collector in $AFFECTBOX_HUB_PREFIX (default /opt/affectbox-hub) with its
# own venv ([hub] pins only: never the device's models), its config, and affectbox-hub.service.
# AFFECTBOX_ROOT=DIR installs below DIR (tests): no apt, no system user, no service start.
# Rerunning changes nothing that is already right and never overwrites the config, the CA or
# the ACL and password files.
set -euo pipefail

REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
R=${AFFECTBOX_ROOT:-}
R=${R%/}
PREFIX=${AFFECTBOX_HUB_PREFIX:-/opt/affectbox-hub}
readonly ETC=/etc/affectbox-hub MQ=/etc/mosquitto/affectbox UNIT_DIR=/etc/systemd/system
readonly USER_NAME=affectbox-hub SERVICE=affectbox-hub.service
readonly APT_PACKAGES=(python3 python3-venv mosquitto mosquitto-clients openssl ca-certificates passwd)
readonly APP_PARTS=(device hub requirements pyproject.toml README.md docs)
STEP="setup.sh --hub"

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; ((rc == 0)) || [[ $STEP == done ]] || printf "error: %s failed (exit %d)\n" "$STEP" "$rc" >&2' EXIT

quiet() {  # quiet WHAT CMD...: run CMD, show its output only when it fails
    local what=$1 out
    shift
    out=$("$@" 2>&1) || { printf '%s\n' "$out" | tail -n 20 >&2; die "$what failed"; }
}

((EUID == 0)) || die "the hub set-up needs root: sudo ./setup.sh --hub"
[[ -z $R || $R == /* ]] || die "AFFECTBOX_ROOT must be an absolute path (got '$R')"
[[ $PREFIX =~ ^(/[A-Za-z0-9._+-]+)+$ ]] || die "AFFECTBOX_HUB_PREFIX must be an absolute path (got '$PREFIX')"

apt_packages() {
    STEP="apt packages"
    if [[ -n $R ]]; then
        say "skip: apt packages (AFFECTBOX_ROOT install): ${APT_PACKAGES[*]}"
        return 0
    fi
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        quiet "apt-get update" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        quiet "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "${missing[@]}"
        say "ok: apt packages installed: ${missing[*]}"
    else
        say "ok: apt packages present: ${APT_PACKAGES[*]}"
    fi
}

system_user() {
    STEP="system user"
    if [[ -n $R ]]; then
        say "skip: system user $USER_NAME (AFFECTBOX_ROOT install)"
        return 0
    fi
    id -u "$USER_NAME" >/dev/null 2>&1 || quiet "useradd $USER_NAME" useradd --system --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
    say "ok: system user $USER_NAME"
}

install_app() {
    STEP="app files"
    local base=$R$PREFIX staging
    mkdir -p -- "$base"
    staging=$(mktemp -d -- "$base/.app.XXXXXX")
    (cd -- "$REPO_DIR" && tar -c --owner=0 --group=0 --numeric-owner --exclude=__pycache__ --exclude='*.pyc' \
        --exclude='*.egg-info' -- "${APP_PARTS[@]}") | tar -x --no-same-owner -C "$staging"
    chmod -R go-w,a+rX -- "$staging"
    chmod 755 -- "$staging"
    rm -rf -- "$base/app.old"
    [[ -d $base/app ]] && mv -- "$base/app" "$base/app.old"
    mv -- "$staging" "$base/app"
    rm -rf -- "$base/app.old"
    say "ok: app copied to $PREFIX/app"
}

install_venv() {
    STEP="venv"
    local venv=$R$PREFIX/venv pins stamp
    # the hub needs the contract's imports (numpy for device.labels, paho-mqtt), the dashboard's web
    # stack (Flask served by waitress, as on the device) and the [hub] pins only; Flask's own
    # dependencies are pinned in pi-constraints.txt
    pins=$(grep -E '^(numpy|paho-mqtt|flask|waitress)==' "$REPO_DIR/requirements/runtime.txt")
    pins+=$'\n'$(grep -E '^(blinker|click|itsdangerous|Jinja2|MarkupSafe|Werkzeug)==' \
        "$REPO_DIR/requirements/pi-constraints.txt")
    stamp=$(cat "$REPO_DIR/requirements/hub.txt" <(printf '%s\n' "$pins") | sha256sum | cut -d' ' -f1)
    [[ -x $venv/bin/python ]] || quiet "python3 -m venv" python3 -m venv "$venv"
    if [[ ! -f $venv/.hub-stamp || $(<"$venv/.hub-stamp") != "$stamp" ]]; then
        # shellcheck disable=SC2086  # one pin per word
        quiet "pip install" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$REPO_DIR/requirements/hub.txt" $pins
        printf '%s\n' "$stamp" >"$venv/.hub-stamp"
    fi
    quiet "pip install the app" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --force-reinstall "$R$PREFIX/app"
    say "ok: venv $PREFIX/venv ([hub] pins, affectbox-hub installed)"
}

clinic_ca() {
    STEP="clinic CA"
    local ca=$R$ETC/ca
    install -d -m 0700 -- "$ca"
    if [[ -f $ca/ca.key && -f $ca/ca.crt ]]; then
        say "ok: clinic CA kept ($ETC/ca)"
        return 0
    fi
    quiet "openssl (CA key)" openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ca/ca.key"
    chmod 0600 -- "$ca/ca.key"
    quiet "openssl (CA certificate)" openssl req -x509 -new -key "$ca/ca.key" -sha256 -days 3650 \
        -subj "/CN=affectbox clinic CA $(hostname -s 2>/dev/null || echo hub)" -out "$ca/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    chmod 0644 -- "$ca/ca.crt"
    say "ok: clinic CA made ($ETC/ca/ca.key never leaves this machine; give devices ca.crt)"
}

broker_files() {
    STEP="broker files"
    local mq=$R$MQ ca=$R$ETC/ca host tmp
    install -d -m 0750 -- "$mq"
    cp -- "$ca/ca.crt" "$mq/ca.crt"
    if [[ ! -f $mq/broker.key || ! -f $mq/broker.crt ]]; then
        host=$(hostname -f 2>/dev/null || hostname)
        tmp=$(mktemp -d)
        quiet "openssl (broker key)" openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$mq/broker.key"
        quiet "openssl (broker CSR)" openssl req -new -key "$mq/broker.key" -subj "/CN=$host" -out "$tmp/broker.csr"
        printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' "$host" \
            >"$tmp/ext.cnf"
        quiet "openssl (broker certificate)" openssl x509 -req -in "$tmp/broker.csr" -CA "$ca/ca.crt" \
            -CAkey "$ca/ca.key" -CAcreateserial -CAserial "$ca/ca.srl" -days 825 -sha256 -extfile "$tmp/ext.cnf" \
            -out "$mq/broker.crt"
        rm -rf -- "$tmp"
    fi
    chmod 0640 -- "$mq/broker.key"
    [[ -f $mq/passwd ]] || install -m 0640 /dev/null "$mq/passwd"
    if [[ ! -f $R$ETC/credentials/broker-password ]]; then
        install -d -m 0700 -- "$R$ETC/credentials"
        tmp=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
        install -m 0600 /dev/null "$R$ETC/credentials/broker-password"
        printf '%s\n' "$tmp" >"$R$ETC/credentials/broker-password"
        quiet "mosquitto_passwd" mosquitto_passwd -b "$mq/passwd" "$USER_NAME" "$tmp"
    fi
    if [[ -z $R ]] && getent group mosquitto >/dev/null; then
        chgrp mosquitto -- "$mq" "$mq/broker.key" "$mq/passwd"
    fi
    install -D -m 0644 -- "$REPO_DIR/hub/deploy/mosquitto-affectbox.conf" "$R/etc/mosquitto/conf.d/affectbox.conf"
    say "ok: broker: TLS on 8883 (passwords) and 8884 (client certificates), ACL and passwords in $MQ"
}

hub_config() {
    STEP="config"
    local etc=$R$ETC
    install -d -m 0755 -- "$etc"
    if [[ -f $etc/config.toml ]]; then
        say "ok: config $ETC/config.toml kept"
    else
        install -m 0644 -- "$REPO_DIR/hub/deploy/config.toml" "$etc/config.toml"
        say "ok: config written to $ETC/config.toml"
    fi
    local check=$etc/config.toml
    quiet "affectbox-hub validate-config" "$R$PREFIX/venv/bin/affectbox-hub" validate-config --config "$check"
    # the ACL (the hub's own entry) exists before the first approval
    if [[ ! -f $R$MQ/acl ]]; then
        printf '# Written by `affectbox-hub device approve/revoke`; edits here are overwritten.\nuser %s\ntopic read affectbox/#\ntopic write affectbox/+/cmd/#\n' \
            "$USER_NAME" >"$R$MQ/acl"
        chmod 0640 -- "$R$MQ/acl"
        [[ -n $R ]] || ! getent group mosquitto >/dev/null || chgrp mosquitto -- "$R$MQ/acl"
    fi
}

install_unit() {
    STEP="systemd unit"
    mkdir -p -- "$R$UNIT_DIR"
    sed "s|@PREFIX@|$PREFIX|g" -- "$REPO_DIR/hub/deploy/$SERVICE" >"$R$UNIT_DIR/$SERVICE.tmp"
    chmod 0644 -- "$R$UNIT_DIR/$SERVICE.tmp"
    mv -- "$R$UNIT_DIR/$SERVICE.tmp" "$R$UNIT_DIR/$SERVICE"
    install -d -m 0700 -- "$R/var/lib/affectbox-hub"
    if [[ -n $R ]] || [[ ! -d /run/systemd/system ]]; then
        say "ok: unit installed to $UNIT_DIR/$SERVICE (not started here: no systemd as PID 1 or AFFECTBOX_ROOT)"
        return 0
    fi
    quiet "systemctl daemon-reload" systemctl daemon-reload
    quiet "systemctl enable" systemctl enable "$SERVICE" mosquitto.service
    quiet "systemctl restart mosquitto" systemctl restart mosquitto.service
    quiet "systemctl restart $SERVICE" systemctl restart "$SERVICE"
    say "ok: mosquitto and $SERVICE enabled and running"
}

apt_packages
system_user
install_app
install_venv
clinic_ca
broker_files
hub_config
install_unit
STEP=done
say "ok: hub installed; approve devices with: $PREFIX/venv/bin/affectbox-hub device list / device approve ID"
