#!/usr/bin/env bash
# install.sh: install mediasortd as a systemd service on Debian 12 (run as root).
#
#   packaging/install.sh                      install the checkout this script is in (needs PyPI)
#   packaging/install.sh --wheelhouse DIR     offline: install mediasortd and its dependencies
#                                             from wheels in DIR, made beforehand with
#                                             `pip wheel -w DIR /path/to/checkout`
#   --no-apt                                  fail instead of apt-get installing missing
#                                             Debian packages
#
# What it does (running it again updates the program, the unit and the user, and keeps
# your config, inbox and library as they are):
#   1. a venv /opt/mediasortd from Debian's /usr/bin/python3, with mediasortd in it
#   2. the system user "mediasortd" (sysusers.d), the unit /etc/systemd/system/mediasortd.service
#   3. /etc/mediasortd/config.toml from config.example.toml, only if it does not exist yet
#   4. the inbox and library named in that config, owned by the service user
# It does not enable or start the service; it prints how to. It works without systemd as
# PID 1 (in an image build or a chroot): then it only skips `systemctl daemon-reload`.
set -euo pipefail

PREFIX=/opt/mediasortd
UNIT_DIR=/etc/systemd/system
SYSUSERS_DIR=/usr/lib/sysusers.d
CONFIG=/etc/mediasortd/config.toml
PYTHON=/usr/bin/python3            # Debian's python: the venv must not depend on pyenv & co.
SERVICE_USER=mediasortd
# The service's defaults; the unit's ReadWritePaths= names the same inbox and library.
INBOX=/srv/media/inbox
LIBRARY=/srv/media/library
STATE_DIR=/var/lib/mediasortd
# Debian packages: needed at run time, and to build systemd-python when installing online.
RUN_PKGS=(systemd python3 python3-venv libimage-exiftool-perl)
BUILD_PKGS=(gcc pkg-config libsystemd-dev python3-dev)

SRC=$(cd "$(dirname "$0")/.." && pwd)
PKG=$SRC/packaging

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

WHEELHOUSE=
NO_APT=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) [ $# -ge 2 ] || usage; WHEELHOUSE=$(cd "$2" && pwd) || die "no such folder: $2"; shift 2 ;;
        --wheelhouse=*) WHEELHOUSE=$(cd "${1#*=}" && pwd) || die "no such folder: ${1#*=}"; shift ;;
        --no-apt) NO_APT=1; shift ;;
        -h|--help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run as root"
for f in "$PKG/systemd/mediasortd.service" "$PKG/systemd/mediasortd.sysusers"; do
    [ -f "$f" ] || die "missing $f (run this script from a mediasortd checkout)"
done

# --- Debian packages
pkgs=("${RUN_PKGS[@]}")
[ -n "$WHEELHOUSE" ] || pkgs+=("${BUILD_PKGS[@]}")
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$NO_APT" = 1 ] && die "missing Debian packages: ${missing[*]}"
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 1. the venv and the program
if [ -x "$PREFIX/bin/python" ] && [ "$(readlink -f "$PREFIX/bin/python")" = "$(readlink -f "$PYTHON")" ]; then
    log "updating the venv $PREFIX"
else
    log "creating the venv $PREFIX (from $PYTHON)"
    rm -rf "$PREFIX"             # not a venv of Debian's python: start over
    "$PYTHON" -m venv "$PREFIX"
fi
pip=("$PREFIX/bin/pip" install --quiet --disable-pip-version-check)
if [ -n "$WHEELHOUSE" ]; then
    ls "$WHEELHOUSE"/mediasortd-*.whl >/dev/null 2>&1 \
        || die "no mediasortd wheel in $WHEELHOUSE; make one with: pip wheel -w $WHEELHOUSE $SRC"
    pip+=(--no-index --find-links "$WHEELHOUSE")
    target=mediasortd
else
    target=$SRC
fi
# An update: --force-reinstall --no-deps, because a rebuilt checkout with an unchanged
# version number must still replace the installed code; the other call installs or
# upgrades the dependencies.
if compgen -G "$PREFIX/lib/python3*/site-packages/mediasortd-*.dist-info" >/dev/null; then
    "${pip[@]}" --force-reinstall --no-deps "$target"
fi
"${pip[@]}" --upgrade "$target"
[ -f "$SRC/README.md" ] && install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
"$PREFIX/bin/mediasortd" --help >/dev/null || die "$PREFIX/bin/mediasortd does not run"
log "installed $("$PREFIX/bin/pip" show mediasortd 2>/dev/null | sed -n 's/^Version: /mediasortd /p') in $PREFIX"

# --- 2. the service user and the unit
install -D -m 0644 "$PKG/systemd/mediasortd.sysusers" "$SYSUSERS_DIR/mediasortd.conf"
systemd-sysusers "$SYSUSERS_DIR/mediasortd.conf"
getent passwd "$SERVICE_USER" >/dev/null || die "systemd-sysusers did not create $SERVICE_USER"
install -D -m 0644 "$PKG/systemd/mediasortd.service" "$UNIT_DIR/mediasortd.service"
log "installed $UNIT_DIR/mediasortd.service and the user $SERVICE_USER"

# --- 3. the config, only when there is none
if [ -e "$CONFIG" ]; then
    log "keeping the existing $CONFIG"
else
    install -d -m 0755 "$(dirname "$CONFIG")"
    example=$SRC/config.example.toml
    [ -f "$example" ] || die "missing $example"
    # The example's [paths] get the service's folders; everything else is kept as it is.
    "$PYTHON" - "$example" "$CONFIG.new" "$INBOX" "$LIBRARY" "$STATE_DIR" <<'PY'
import re, sys, tomllib
src, dst, inbox, library, state_dir = sys.argv[1:]
want = {"inbox": inbox, "library": library, "state_dir": state_dir}
out, section, done = [], None, set()
def add_missing():  # the keys [paths] lacks, before the blank lines that end it
    at = len(out)
    while at and not out[at - 1].strip():
        at -= 1
    out[at:at] = [f'{k} = "{v}"' for k, v in want.items() if k not in done]
    done.update(want)
for line in open(src, encoding="utf-8").read().splitlines():
    header = re.match(r"\s*\[([^\]]+)\]", line)
    if header:
        if section == "paths":
            add_missing()
        section = header.group(1).strip()
    key = re.match(r"\s*([A-Za-z_]+)\s*=", line)
    if section == "paths" and key and key.group(1) in want:
        line = f'{key.group(1)} = "{want[key.group(1)]}"'
        done.add(key.group(1))
    out.append(line)
if section == "paths":
    add_missing()
elif not done:
    out = ["[paths]", *(f'{k} = "{v}"' for k, v in want.items()), "", *out]
text = "\n".join(out) + "\n"
got = tomllib.loads(text)["paths"]
assert all(got[k] == v for k, v in want.items()), got
open(dst, "w", encoding="utf-8").write(text)
PY
    chmod 0644 "$CONFIG.new"
    mv "$CONFIG.new" "$CONFIG"
    log "wrote $CONFIG (from config.example.toml)"
fi

# --- 4. the inbox and library the config names
read -r inbox library < <("$PYTHON" - "$CONFIG" <<'PY'
import sys, tomllib
paths = tomllib.load(open(sys.argv[1], "rb")).get("paths", {})
print(paths.get("inbox", ""), paths.get("library", ""))
PY
) || die "cannot read [paths] from $CONFIG"
[ -n "$inbox" ] && [ -n "$library" ] || die "$CONFIG has no [paths] inbox and library"
# New folders only: an existing inbox or library keeps its owner and mode. The inbox is
# setgid and group-writable so that members of the mediasortd group can drop files in.
for spec in "$inbox:2770" "$library:2750"; do
    dir=${spec%:*}
    if [ ! -d "$dir" ]; then
        install -d -m "${spec##*:}" -o "$SERVICE_USER" -g "$SERVICE_USER" "$dir"
        log "created $dir"
    fi
done
if [ "$inbox $library" != "$INBOX $LIBRARY" ] && [ ! -d "$UNIT_DIR/mediasortd.service.d" ]; then
    log "NOTE: $CONFIG uses $inbox and $library; allow the service to write there with"
    log "      \`systemctl edit mediasortd\`:  [Service] / ReadWritePaths= / ReadWritePaths=$inbox $library"
fi

# --- systemd
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    log "reloaded systemd"
else
    log "systemd is not running (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)): skipped \`systemctl daemon-reload\`"
fi

cat <<EOF

mediasortd is installed. Next:
  edit $CONFIG if needed (inbox: $inbox, library: $library)
  systemctl enable --now mediasortd      start it now and at every boot
  systemctl status mediasortd            "Status:" shows what it is doing
  journalctl -u mediasortd -f            its log
EOF
