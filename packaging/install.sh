#!/usr/bin/env bash
# install.sh: install mediasortd as a systemd service on Debian 12 (run as root).
#
#   packaging/install.sh                      install the checkout this script is in (needs PyPI)
#   packaging/install.sh --wheelhouse DIR     offline: install mediasortd and its dependencies
#                                             from wheels in DIR, made beforehand with
#                                             `pip wheel -w DIR /path/to/checkout`
#   --no-apt                                  fail instead of apt-get installing missing
#                                             Debian packages
#   --uninstall                               remove the program, the unit, the command, the
#                                             completion and the user; keep the config, the
#                                             catalog, the inbox and the library
#   --uninstall --purge                       also remove the config (/etc/mediasortd, the
#                                             unit's drop-ins) and the catalog (/var/lib/mediasortd);
#                                             the inbox and the library are never removed
#   -h, --help                                this text
#
# What it does (running it again is an upgrade: it replaces the program, restarts the
# service if it is running, and keeps your config, inbox and library as they are):
#   1. a venv built beside the running one in /opt/mediasortd.d/, then swapped in at once:
#      /opt/mediasortd is a symlink to it (never a half-built program); mediasortd on PATH
#      as /usr/local/bin/mediasortd, bash completion in /usr/share/bash-completion
#   2. the system user and group "mediasortd" (sysusers.d), the unit
#      /etc/systemd/system/mediasortd.service
#   3. /etc/mediasortd/config.toml from config.example.toml, only if it does not exist yet
#   4. the inbox (2770) and library (2750) named in that config, owned by mediasortd:
#      members of the group drop files and run find/status/history without root
# It does not enable or start the service; it prints how to. It works without systemd as
# PID 1 (in an image build or a chroot): then it only skips the systemctl calls.
set -euo pipefail

PREFIX=/opt/mediasortd             # a symlink to the current release in $RELEASES
RELEASES=/opt/mediasortd.d
BIN_LINK=/usr/local/bin/mediasortd
COMPLETION=/usr/share/bash-completion/completions/mediasortd
UNIT_DIR=/etc/systemd/system
SYSUSERS=/usr/lib/sysusers.d/mediasortd.conf
CONFIG=/etc/mediasortd/config.toml
PYTHON=/usr/bin/python3            # Debian's python: the venv must not depend on pyenv & co.
SERVICE_USER=mediasortd
UNIT=mediasortd.service
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
help_text() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }
usage() { help_text >&2; exit 2; }
have_systemd() { [ -d /run/systemd/system ]; }

WHEELHOUSE=
NO_APT=0
UNINSTALL=0
PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) [ $# -ge 2 ] || usage; WHEELHOUSE=$(cd "$2" && pwd) || die "no such folder: $2"; shift 2 ;;
        --wheelhouse=*) WHEELHOUSE=$(cd "${1#*=}" && pwd) || die "no such folder: ${1#*=}"; shift ;;
        --no-apt) NO_APT=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) help_text; exit 0 ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"
[ "$(id -u)" = 0 ] || die "run as root"

# --- uninstall
if [ "$UNINSTALL" = 1 ]; then
    if have_systemd && systemctl cat "$UNIT" >/dev/null 2>&1; then
        systemctl disable --now --quiet "$UNIT" 2>/dev/null || systemctl stop "$UNIT" || true
        log "stopped and disabled $UNIT"
    fi
    rm -f "$UNIT_DIR/$UNIT" "$SYSUSERS" "$COMPLETION"
    if [ -L "$BIN_LINK" ] && [ "$(readlink "$BIN_LINK")" = "$PREFIX/bin/mediasortd" ]; then
        rm -f "$BIN_LINK"
    fi
    rm -rf "$PREFIX" "$RELEASES"
    log "removed the program ($PREFIX), $BIN_LINK, $UNIT_DIR/$UNIT and the completion"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$UNIT_DIR/$UNIT.d" "$(dirname "$CONFIG")" "$STATE_DIR"
        log "purged the config $(dirname "$CONFIG"), the unit's drop-ins and the catalog $STATE_DIR"
    fi
    have_systemd && systemctl daemon-reload
    if getent passwd "$SERVICE_USER" >/dev/null; then
        userdel "$SERVICE_USER"
        log "removed the user $SERVICE_USER"
    fi
    if getent group "$SERVICE_USER" >/dev/null; then
        groupdel "$SERVICE_USER"
        log "removed the group $SERVICE_USER"
    fi
    kept=()
    [ "$PURGE" = 1 ] || kept+=("the config $(dirname "$CONFIG")" "the catalog $STATE_DIR")
    for d in "$INBOX" "$LIBRARY"; do [ -d "$d" ] && kept+=("$d"); done
    if [ ${#kept[@]} -gt 0 ]; then
        log "kept: ${kept[*]}"
        log "(the inbox and the library hold your photos: remove them yourself if you mean it;"
        log " installing again reuses what was kept, with the same user and group ids)"
    fi
    exit 0
fi

for f in "$PKG/systemd/$UNIT" "$PKG/systemd/mediasortd.sysusers"; do
    [ -f "$f" ] || die "missing $f (run this script from a mediasortd checkout)"
done

# --- 0. online: can pip reach the package index? (asked first: pip would retry for a
# minute and then fail half-way)
if [ -z "$WHEELHOUSE" ]; then
    if ! why=$("$PYTHON" - <<'PY' 2>&1
import configparser, os, sys, urllib.request
index = os.environ.get("PIP_INDEX_URL")
for conf in ("/etc/pip.conf", os.path.expanduser("~/.config/pip/pip.conf"),
             os.path.expanduser("~/.pip/pip.conf")):
    p = configparser.ConfigParser()
    if not index and p.read(conf) and p.has_option("global", "index-url"):
        index = p.get("global", "index-url")
index = (index or "https://pypi.org/simple").rstrip("/")
try:
    urllib.request.urlopen(f"{index}/pip/", timeout=10).close()
except Exception as e:
    sys.exit(f"{index} cannot be reached: {getattr(e, 'reason', None) or e}")
PY
    ); then
        die "$why
  To install without network access, make a wheelhouse on a connected machine:
      pip wheel -w /tmp/wh $SRC
  copy it here and run: $0 --wheelhouse /tmp/wh"
    fi
fi

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

# --- 1. the program: a new venv in $RELEASES, swapped in only once it works
if [ -n "$WHEELHOUSE" ]; then
    ls "$WHEELHOUSE"/mediasortd-*.whl >/dev/null 2>&1 \
        || die "no mediasortd wheel in $WHEELHOUSE; make one with: pip wheel -w $WHEELHOUSE $SRC"
fi
install -d -m 0755 "$RELEASES"
release=$(mktemp -d "$RELEASES/mediasortd-$(date -u +%Y%m%dT%H%M%SZ)-XXXX")
chmod 0755 "$release"
# A venv is not relocatable (its scripts name their python): it is built where it stays,
# and removed again if anything fails before the swap.
trap 'rm -rf "$release"' EXIT
log "building the program in $release (from $PYTHON)"
"$PYTHON" -m venv "$release"
pip=("$release/bin/pip" install --quiet --disable-pip-version-check)
if [ -n "$WHEELHOUSE" ]; then
    "${pip[@]}" --no-index --find-links "$WHEELHOUSE" mediasortd
else
    "${pip[@]}" "$SRC"
fi
[ -f "$SRC/README.md" ] && install -m 0644 "$SRC/README.md" "$release/README.md"
"$release/bin/mediasortd" --help >/dev/null || die "$release/bin/mediasortd does not run"
"$release/bin/python" -m daemon.app.completion >"$release/bash-completion" \
    || die "cannot generate the bash completion"
version=$("$release/bin/mediasortd" --version)

# The swap: a new symlink renamed over the old one. An /opt/mediasortd from an older
# install.sh (a directory) is moved into $RELEASES first.
if [ -d "$PREFIX" ] && [ ! -L "$PREFIX" ]; then
    mv "$PREFIX" "$RELEASES/mediasortd-old-$(date -u +%Y%m%dT%H%M%SZ)"
fi
ln -sfn "$release" "$PREFIX.new"
mv -T "$PREFIX.new" "$PREFIX"
trap - EXIT
log "installed $version in $PREFIX -> $release"
if [ -e "$BIN_LINK" ] && ! { [ -L "$BIN_LINK" ] && [ "$(readlink "$BIN_LINK")" = "$PREFIX/bin/mediasortd" ]; }; then
    log "NOTE: $BIN_LINK exists and is not mediasortd's: left as it is"
else
    install -d -m 0755 "$(dirname "$BIN_LINK")"
    ln -sfn "$PREFIX/bin/mediasortd" "$BIN_LINK"
fi
install -D -m 0644 "$release/bash-completion" "$COMPLETION"

# --- 2. the service user and the unit. A catalog kept by --uninstall is owned by the old
# user's ids: the new user gets them back, so the kept files are its own again.
ids=-
if ! getent passwd "$SERVICE_USER" >/dev/null && [ -d "$STATE_DIR" ]; then
    uid=$(stat -c %u "$STATE_DIR") gid=$(stat -c %g "$STATE_DIR")
    if [ "$uid" != 0 ] && ! getent passwd "$uid" >/dev/null && ! getent group "$gid" >/dev/null; then
        ids=$uid:$gid
        log "reusing the ids $ids of the kept $STATE_DIR for the user $SERVICE_USER"
    fi
fi
if [ "$ids" = - ]; then
    install -D -m 0644 "$PKG/systemd/mediasortd.sysusers" "$SYSUSERS"
else
    install -d -m 0755 "$(dirname "$SYSUSERS")"
    { grep -v '^u ' "$PKG/systemd/mediasortd.sysusers"
      printf 'g     mediasortd %s\n' "${ids#*:}"
      grep '^u ' "$PKG/systemd/mediasortd.sysusers" | sed -E "s/^(u[[:space:]]+mediasortd[[:space:]]+)-/\\1$ids/"
    } >"$SYSUSERS"
    chmod 0644 "$SYSUSERS"
fi
systemd-sysusers "$SYSUSERS"
getent passwd "$SERVICE_USER" >/dev/null || die "systemd-sysusers did not create $SERVICE_USER"
install -D -m 0644 "$PKG/systemd/$UNIT" "$UNIT_DIR/$UNIT"
log "installed $UNIT_DIR/$UNIT and the user $SERVICE_USER"

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
# (one line each: the library, then every inbox: paths.inbox is one path or a list)
mapfile -t found < <("$PYTHON" - "$CONFIG" <<'PY'
import sys, tomllib
paths = tomllib.load(open(sys.argv[1], "rb")).get("paths", {})
inbox = paths.get("inbox", "")
print(paths.get("library", ""), *(inbox if isinstance(inbox, list) else [inbox]), sep="\n")
PY
) || die "cannot read [paths] from $CONFIG"
library=${found[0]:-}
inboxes=("${found[@]:1}")
inbox="${inboxes[*]}"
[ -n "$inbox" ] && [ -n "$library" ] || die "$CONFIG has no [paths] inbox and library"
# New folders only: an existing inbox or library keeps its owner and mode. The inbox is
# setgid and group-writable so that members of the mediasortd group can drop files in;
# the library is setgid and group-readable (mediasortd keeps the setgid bit on every
# folder it makes there), so they can read it.
for spec in "${inboxes[@]/%/:2770}" "$library:2750"; do
    dir=${spec%:*}
    if [ ! -d "$dir" ]; then
        install -d -m "${spec##*:}" -o "$SERVICE_USER" -g "$SERVICE_USER" "$dir"
        log "created $dir"
    fi
done
if [ "$inbox $library" != "$INBOX $LIBRARY" ] && [ ! -d "$UNIT_DIR/$UNIT.d" ]; then
    log "NOTE: $CONFIG uses $inbox and $library; allow the service to write there with"
    log "      $BIN_LINK unit-paths --write && systemctl daemon-reload"
fi

# --- systemd: load the new unit; an upgrade restarts a running service
restarted=
if have_systemd; then
    systemctl daemon-reload
    log "reloaded systemd"
    if systemctl is-active --quiet "$UNIT"; then
        old_pid=$(systemctl show -p MainPID --value "$UNIT")
        systemctl restart "$UNIT" || die "the service did not restart: see systemctl status $UNIT"
        restarted="restarted the running service with $version (pid $old_pid -> $(systemctl show -p MainPID --value "$UNIT"))"
        log "$restarted"
    fi
else
    log "systemd is not running (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)): skipped \`systemctl daemon-reload\`"
fi
# Older releases go once nothing runs them any more (without systemd, a service that
# still runs keeps its release until the next install).
for old in "$RELEASES"/mediasortd-*; do
    [ "$old" != "$release" ] || continue
    if grep -qsF "$old/" /proc/[0-9]*/cmdline; then
        log "keeping $old: a process still runs it"
    else
        rm -rf "$old"
    fi
done

cat <<EOF

$version is installed${restarted:+ (and the running service was restarted)}. Next:
  edit $CONFIG if needed (inbox: $inbox, library: $library)
  systemctl enable --now mediasortd      start it now and at every boot
  systemctl status mediasortd            "Status:" shows what it is doing
  journalctl -u mediasortd -f            its log
Let people drop files and run \`mediasortd find/status/history\` without root:
  usermod -aG $SERVICE_USER USERNAME          (then they log in again)
EOF
