#!/usr/bin/env bash
# sdbox.sh - boot a REAL systemd (as PID 1 of a systemd-nspawn container) on a Debian 12
# host whose own PID 1 is *not* systemd (our CI VMs), so that tests/system/test_unit.py can
# install mediasortd with packaging/install.sh and drive it with real systemctl, journald,
# sd_notify and the watchdog.
#
# Adapted from the team's systemd-in-container recipe (boot-systemd.sh and its NOTES.md,
# which record the measurements and the alternatives that failed). Changes here: a
# `check` command that tells whether this machine can boot the container at all (the
# tests skip with its message), no python3-systemd (the service has its own venv), and
# this header.
#
# How it works:
#   * The container's OS tree is THIS machine's own root filesystem, not a debootstrap:
#     a NON-recursive bind mount of "/" (so the host's /proc, /sys, /dev, /dev/pts ...
#     sub-mounts are not dragged in) is booted with `systemd-nspawn --volatile=overlay`,
#     i.e. read-only host root + a throw-away tmpfs overlay on top.  Everything the
#     container writes (/etc, /var, /opt, journal files ...) lives in RAM and vanishes
#     when it stops.  The container sees the host's installed packages.
#   * Everything runs inside a private mount namespace (unshare --propagation private),
#     so none of our mounts are visible on, or can propagate to, the host.  A tmpfs is
#     mounted on /run/systemd in that namespace because this host's /run is on disk and
#     nspawn would otherwise leave /run/systemd/nspawn/... behind.
#   * No systemd/machined/dbus on the host => nspawn runs with --register=no --keep-unit.
#     nspawn then creates "payload"/"supervisor" sub-cgroups below the cgroup it runs in,
#     so we first move it into a dedicated cgroup (sdbox-NAME) that teardown removes.
#   * The host talks to the container with nsenter (`sdbox.sh exec CMD...`), or,
#     after we write a fake /run/systemd/machines/NAME record, with `systemctl -M NAME`.
#   * Host writes into the overlay's lower layer are visible inside but cause no inotify
#     events there: share live folders through SDBOX_SHARE / SDBOX_BIND bind mounts.
#
# Usage (as root):
#   sdbox.sh check         # can this machine boot the container? exit 0, or 1 + the reason
#   sdbox.sh up            # idempotent: install deps if missing, boot, wait until running
#   sdbox.sh exec CMD ...  # run CMD inside the container (e.g. systemctl status foo)
#   sdbox.sh shell         # interactive shell inside the container
#   sdbox.sh status        # is it up? prints leader PID + `systemctl is-system-running`
#   sdbox.sh leader        # print host PID of the container's systemd (PID 1 inside)
#   sdbox.sh root          # print a host path to the container's / (/proc/PID/root)
#   sdbox.sh share         # print the shared read-write dir (same path on both sides)
#   sdbox.sh down          # stop container, remove cgroups, state dir, fake registration
#
# Environment knobs (all optional):
#   SDBOX_NAME=sdbox              machine name (also the hostname inside)
#   SDBOX_STATE=/var/lib/sdbox/NAME  host state dir (pid files, console log, share dir)
#   SDBOX_SHARE=$SDBOX_STATE/share  host dir bind-mounted read-write at the SAME path inside
#                                 (use it for files both sides must see live, e.g. inotify;
#                                 keep it out of /tmp, which PrivateTmp=yes units can't see)
#   SDBOX_BIND="/a /b"            more host dirs to bind read-write at the same path inside
#   SDBOX_MASK="..."              units masked in the container (host services we don't want)
#   SDBOX_PRIVATE_NETWORK=1       1: container only has its own loopback; 0: share host network
#   SDBOX_BOOT_TIMEOUT=90         seconds to wait for `systemctl is-system-running`
#   SDBOX_NSPAWN_ARGS="..."       extra systemd-nspawn arguments (word-split)
#   SDBOX_FAKE_REGISTER=1         write /run/systemd/machines/NAME so `systemctl -M NAME` works
#   SDBOX_SKIP_APT=0              1: never call apt-get (fail if a dependency is missing)
#   SDBOX_ROOTFS=/                OS tree to boot (read-only + tmpfs overlay). Default: this
#                                 host's own root. Alternative: a debootstrap'ed directory
#                                 (it needs systemd and dbus inside)
set -euo pipefail

NAME=${SDBOX_NAME:-sdbox}
# Not under /tmp: units with PrivateTmp=yes would not see a share dir below /tmp.
STATE=${SDBOX_STATE:-/var/lib/sdbox/$NAME}
SHARE=${SDBOX_SHARE:-$STATE/share}
BIND=${SDBOX_BIND:-}
# Services this host image has enabled that are pointless (or would fight over ports)
# in a test container.  Masking a unit that does not exist is harmless.
MASK=${SDBOX_MASK:-postgresql.service apt-daily.timer apt-daily-upgrade.timer man-db.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer getty@tty1.service console-getty.service}
PRIVATE_NETWORK=${SDBOX_PRIVATE_NETWORK:-1}
BOOT_TIMEOUT=${SDBOX_BOOT_TIMEOUT:-90}
FAKE_REGISTER=${SDBOX_FAKE_REGISTER:-1}
SKIP_APT=${SDBOX_SKIP_APT:-0}
ROOT_MNT=$STATE/root                      # mount point for the non-recursive bind of /
PIDFILE=$STATE/nspawn.pid                 # host PID of systemd-nspawn
LEADERFILE=$STATE/leader.pid              # host PID of the container's PID 1 (systemd)
CONSOLE=$STATE/console.log                # nspawn + container console output
MACHINE_REC=/run/systemd/machines/$NAME   # fake machined record for `systemctl -M`
CG_NAME=sdbox-$NAME
# A clean environment for commands run inside (the host's PATH may point at pyenv shims etc.)
IN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        LANG=C.UTF-8 TERM="${TERM:-dumb}" HOME=/root SYSTEMD_PAGER= PAGER=cat SYSTEMD_COLORS=0)

log() { printf '[sdbox] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- helpers
pid_is() {  # pid_is PID COMM -> true if PID is alive and its comm is COMM
    [ -n "${1:-}" ] && [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

nspawn_pid() {  # our systemd-nspawn's PID, only if it is really ours (alive + our machine name)
    local p
    p=$(cat "$PIDFILE" 2>/dev/null) || return 1
    pid_is "$p" systemd-nspawn || return 1
    tr '\0' ' ' < "/proc/$p/cmdline" | grep -q -- "--machine=$NAME " || return 1
    echo "$p"
}

leader_pid() {  # host PID of the container's systemd, if alive and a child of our nspawn
    local n l
    n=$(nspawn_pid) || return 1
    l=$(cat "$LEADERFILE" 2>/dev/null) || return 1
    pid_is "$l" systemd || return 1
    [ "$(awk '{print $4}' "/proc/$l/stat")" = "$n" ] || return 1
    echo "$l"
}

in_container() {  # run a command inside the container's namespaces (as a plain process)
    local l
    l=$(leader_pid) || die "container '$NAME' is not running (run: $0 up)"
    "${IN_ENV[@]}" nsenter --target "$l" --all --root --wd -- "$@"
}

cgroup_dirs() {  # the dedicated cgroup directories we use on this host's hierarchies
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        echo "/sys/fs/cgroup/$CG_NAME"                         # pure cgroup v2 host
    else                                                       # hybrid/legacy (this VM)
        [ -d /sys/fs/cgroup/systemd ] && echo "/sys/fs/cgroup/systemd/$CG_NAME"
        [ -d /sys/fs/cgroup/unified ] && echo "/sys/fs/cgroup/unified/$CG_NAME"
    fi
    return 0
}

ensure_packages() {
    # systemd          : /lib/systemd/systemd, systemctl, journalctl (not running on host)
    # systemd-container: systemd-nspawn.  NB: it pins the exact systemd version, so this
    #                    may upgrade the (idle) host systemd package to the newest 252.x.
    # dbus             : system bus inside the container (systemctl -M, logind)
    local pkgs=(systemd systemd-container dbus) missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    command -v nsenter >/dev/null && command -v unshare >/dev/null || missing+=(util-linux)
    command -v ps >/dev/null || missing+=(procps)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$SKIP_APT" = 1 ] && die "missing packages: ${missing[*]}"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- up
cmd_up() {
    local l
    if l=$(leader_pid); then
        log "already running: machine=$NAME leader=$l"
        wait_running "$l"
        echo "$l"; return 0
    fi
    if [ -e "$PIDFILE" ] || [ -e "$STATE" ]; then
        log "cleaning up stale state in $STATE"
        cmd_down >/dev/null
    fi
    ensure_packages

    local t0; t0=$(date +%s.%N)
    mkdir -p "$STATE" "$ROOT_MNT" "$SHARE"
    local b; for b in $BIND; do [ -d "$b" ] || die "SDBOX_BIND: $b is not a directory"; done

    local cgs=() c
    mapfile -t cgs < <(cgroup_dirs)
    for c in "${cgs[@]}"; do mkdir -p "$c"; done

    # systemd.* words after "--" are arguments for the container's systemd (its "kernel
    # command line"): mask unwanted host units, give the container its own machine-id.
    local init_args=() u
    for u in $MASK; do init_args+=("systemd.mask=$u"); done
    init_args+=("systemd.machine_id=$(tr -d '-' < /proc/sys/kernel/random/uuid)")

    local nspawn_args=(
        --quiet
        --directory="$ROOT_MNT"   # the non-recursive bind of / made below
        --volatile=overlay        # host root read-only + tmpfs overlay: nothing written to disk
        --machine="$NAME"
        --register=no             # there is no machined on the host
        --keep-unit               # ... and no systemd to allocate a scope unit from
        --link-journal=no         # container journal stays inside (in the tmpfs overlay)
        --console=pipe            # console output -> $CONSOLE (no tty needed)
        --bind="$SHARE"           # shared read-write dir, same path on both sides
    )
    [ "$PRIVATE_NETWORK" = 1 ] && nspawn_args+=(--private-network)
    for b in $BIND; do nspawn_args+=(--bind="$b"); done
    # shellcheck disable=SC2206
    [ -n "${SDBOX_NSPAWN_ARGS:-}" ] && nspawn_args+=($SDBOX_NSPAWN_ARGS)

    log "booting machine '$NAME' (state: $STATE)"
    # Launcher: runs in its own session + private mount namespace; execs nspawn, so the
    # PID written to $PIDFILE is nspawn's.  All mounts die with that namespace.
    setsid unshare --mount --propagation private -- /bin/sh -c '
        set -e
        state=$1 root=$2; shift 2
        mkdir -p /run/systemd
        mount -t tmpfs -o mode=0755,size=16m sdbox-run /run/systemd  # nspawn scratch, off-disk
        mount --bind "$SDBOX_ROOTFS" "$root"                         # NOT --rbind
        for cg in $SDBOX_CGROUPS; do echo $$ > "$cg/cgroup.procs"; done
        echo $$ > "$state/nspawn.pid"
        exec systemd-nspawn "$@"
    ' sdbox-launcher "$STATE" "$ROOT_MNT" "${nspawn_args[@]}" --boot -- "${init_args[@]}" \
        </dev/null >"$CONSOLE" 2>&1 &
    local launcher=$!
    # (SDBOX_CGROUPS and SDBOX_ROOTFS are passed through the environment, see below)

    # Wait for nspawn to fork the container's PID 1 (comm "systemd").
    local deadline=$(( $(date +%s) + BOOT_TIMEOUT )) n="" kid
    while :; do
        if [ -z "$n" ]; then n=$(nspawn_pid || true); fi
        if [ -n "$n" ]; then
            for kid in $(ps -o pid= --ppid "$n" 2>/dev/null); do   # (no /proc/PID/task/*/children here)
                if pid_is "$kid" systemd; then l=$kid; break 2; fi
            done
        fi
        if [ -z "$n" ] && ! kill -0 "$launcher" 2>/dev/null && [ -s "$CONSOLE" ]; then
            deadline=0                             # launcher died before nspawn started
        fi
        if [ -n "$n" ] && ! pid_is "$n" systemd-nspawn; then
            deadline=0                             # nspawn exited before booting
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "container PID 1 did not appear; console log:"; cat "$CONSOLE" >&2 || true
            cmd_down >/dev/null; die "boot failed"
        fi
        sleep 0.1
    done
    echo "$l" > "$LEADERFILE"
    wait_running "$l" || { log "console log:"; cat "$CONSOLE" >&2; cmd_down >/dev/null; die "boot failed"; }

    if [ "$FAKE_REGISTER" = 1 ]; then
        # What machined would write; lets host tools use `systemctl -M NAME` / `systemd-run -M`.
        mkdir -p /run/systemd/machines
        printf 'NAME=%s\nLEADER=%s\nCLASS=container\nSERVICE=sdbox\nROOT=/\n' "$NAME" "$l" > "$MACHINE_REC"
    fi
    log "machine '$NAME' up: leader PID $l, booted in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"
    echo "$l"
}

wait_running() {  # wait until the container's systemd reports running/degraded
    local l=$1 deadline=$(( $(date +%s) + BOOT_TIMEOUT )) st
    while :; do
        st=$("${IN_ENV[@]}" nsenter --target "$l" --all --root --wd -- systemctl is-system-running 2>/dev/null || true)
        case "$st" in
            running) return 0 ;;
            degraded)
                log "WARNING: system is degraded; failed units:"
                "${IN_ENV[@]}" nsenter --target "$l" --all --root --wd -- systemctl --failed --no-legend >&2 || true
                return 0 ;;
        esac
        pid_is "$l" systemd || { log "container PID 1 exited during boot"; return 1; }
        [ "$(date +%s)" -ge "$deadline" ] && { log "timeout; last state: '$st'"; return 1; }
        sleep 0.2
    done
}

# ---------------------------------------------------------------- down
cmd_down() {
    local n i
    if n=$(nspawn_pid); then
        # nspawn turns SIGTERM into SIGRTMIN+3 for the container's systemd = clean "halt":
        # units are stopped (services get their SIGTERM), then nspawn exits.
        log "stopping machine '$NAME' (nspawn PID $n)"
        kill -TERM "$n" 2>/dev/null || true
        for i in $(seq 1 300); do pid_is "$n" systemd-nspawn || break; sleep 0.1; done
        if pid_is "$n" systemd-nspawn; then
            log "clean halt timed out; forcing"
            kill -TERM "$n" 2>/dev/null || true          # 2nd SIGTERM = immediate termination
            sleep 3
            pid_is "$n" systemd-nspawn && kill -KILL "$n" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    # Remove our cgroups bottom-up (they are empty once nspawn and the container are gone).
    local c d
    for c in $(cgroup_dirs); do
        [ -d "$c" ] || continue
        for i in $(seq 1 50); do
            find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$c" ] || break
            sleep 0.1
        done
        if [ -d "$c" ]; then
            log "WARNING: could not remove cgroup $c; processes left:"
            find "$c" -name cgroup.procs -exec cat {} + >&2 || true
        fi
    done
    [ -f "$MACHINE_REC" ] && grep -q '^SERVICE=sdbox$' "$MACHINE_REC" && rm -f "$MACHINE_REC"
    # The bind/overlay mounts lived only in the launcher's private mount namespace, which
    # is gone now; "$ROOT_MNT" is a plain empty directory again.
    if mountpoint -q "$ROOT_MNT" 2>/dev/null; then die "$ROOT_MNT is still a mount point?!"; fi
    rm -rf --one-file-system "$STATE"
    [ -z "${SDBOX_STATE:-}" ] && rmdir --ignore-fail-on-non-empty /var/lib/sdbox 2>/dev/null
    log "machine '$NAME' is down"
}

cmd_check() {  # can this machine boot the container? Detects; never installs or boots.
    local why=() p c probe
    for p in systemd systemd-container dbus; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || why+=("Debian package $p is not installed")
    done
    if [ ${#why[@]} -gt 0 ] && [ "$SKIP_APT" != 1 ]; then
        log "note: '$0 up' will apt-get install the missing packages"; why=()
    fi
    for c in nsenter unshare setsid ps mountpoint; do
        command -v "$c" >/dev/null || why+=("command $c is missing")
    done
    [ -e "$SDBOX_ROOTFS/lib/systemd/systemd" ] || why+=("$SDBOX_ROOTFS has no /lib/systemd/systemd to boot")
    # What the launcher in `up` does first: a private mount namespace with a tmpfs and a
    # non-recursive bind mount of the OS tree (gone with the namespace when sh exits).
    probe=$(mktemp -d)
    unshare --mount --propagation private sh -c \
        'mount -t tmpfs sdbox-check "$1" && mount --bind "$2" "$1"' sh "$probe" "$SDBOX_ROOTFS" 2>/dev/null \
        || why+=("cannot bind-mount $SDBOX_ROOTFS in a private mount namespace: not privileged enough")
    rmdir "$probe"
    [ -n "$SDBOX_CGROUPS" ] || why+=("no cgroup hierarchy found under /sys/fs/cgroup")
    for c in $SDBOX_CGROUPS; do     # can we make (and remove) our own cgroup there?
        probe=$(dirname "$c")/sdbox-check-$$
        if mkdir "$probe" 2>/dev/null; then rmdir "$probe"; else why+=("cannot create cgroups in $(dirname "$c")"); fi
    done
    if [ ${#why[@]} -gt 0 ]; then
        printf '%s\n' "${why[@]}"; return 1
    fi
    echo "ok: this machine can boot a systemd container (rootfs $SDBOX_ROOTFS)"
}

cmd_status() {
    local l
    if l=$(leader_pid); then
        echo "machine=$NAME leader=$l nspawn=$(nspawn_pid) state=$(in_container systemctl is-system-running 2>/dev/null || true)"
    else
        echo "machine=$NAME not running"; return 3
    fi
}

# SDBOX_CGROUPS is read by the launcher shell (space separated, no spaces in paths).
SDBOX_CGROUPS=$(cgroup_dirs | tr '\n' ' '); export SDBOX_CGROUPS
export SDBOX_ROOTFS=${SDBOX_ROOTFS:-/}

case "${1:-up}" in
    check)   cmd_check ;;
    up)      cmd_up ;;
    down)    cmd_down ;;
    status)  cmd_status ;;
    leader)  leader_pid || die "container '$NAME' is not running" ;;
    root)    echo "/proc/$(leader_pid || die "not running")/root" ;;
    share)   echo "$SHARE" ;;
    exec)    shift; in_container "$@" ;;
    shell)   in_container /bin/bash -l ;;
    *)       die "usage: $0 [check|up|down|status|leader|root|share|exec CMD...|shell]" ;;
esac
