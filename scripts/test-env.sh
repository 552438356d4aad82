#!/usr/bin/env bash
# Bring up (or stop) everything hoist's test suite needs, on loopback only.
#
#   scripts/test-env.sh [start]    install what is missing, start what is not running,
#                                  write $HOIST_TEST_ENV_FILE and print its export lines
#   scripts/test-env.sh stop       stop the services this script started (by PID)
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
#   HOIST_TEST_SKIP_CLOUD=1  skip the moto (AWS) server and its venv
#   HOIST_TEST_BROWSER=1     also install chromium + chromium-driver

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
    printf '%s\n' "$!" >"$(pidfile "$name")"
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
    if [[ "${HOIST_TEST_BROWSER:-0}" == 1 ]]; then
        pkgs+=(chromium chromium-driver)
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

# ------------------------------------------------------------------------------ browser

ensure_browser() {
    [[ "${HOIST_TEST_BROWSER:-0}" == 1 ]] || return 0
    local chromium chromedriver
    chromium=$(command -v chromium || true)
    chromedriver=$(command -v chromedriver || true)
    [[ -n "$chromium" && -n "$chromedriver" ]] || die "browser: chromium/chromedriver not found after install"
    say "browser: $chromium, $chromedriver"
    export_var HOIST_TEST_CHROMIUM "$chromium"
    export_var HOIST_TEST_CHROMEDRIVER "$chromedriver"
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
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
    say "env: wrote $ENV_FILE"
    cat "$ENV_FILE"
}

cmd_start() {
    mkdir -p "$CACHE" "$PIDS"
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
    ensure_browser
    export_var HOIST_TEST_REQUIRE_SERVICES 1
    write_env_file
}

cmd_stop() {
    mkdir -p "$CACHE" "$PIDS"
    exec 9>"$CACHE/test-env.lock"
    flock -w 120 9 || die "another scripts/test-env.sh holds $CACHE/test-env.lock"
    stop_pid moto moto_server TERM 15
    stop_pid registry-auth docker-registry TERM 15
    stop_pid registry docker-registry TERM 15
    # SIGINT = PostgreSQL's "fast" shutdown (does not wait for clients to leave).
    stop_pid postgres postgres INT 60
    stop_pid dockerd dockerd TERM 60
}

cmd_status() {
    local name marker pid
    for name in dockerd:dockerd postgres:postgres registry:docker-registry \
        registry-auth:docker-registry moto:moto_server; do
        marker=${name#*:}
        name=${name%%:*}
        if pid=$(our_pid "$name" "$marker"); then
            say "$name: running (pid $pid)"
        else
            say "$name: not started by test-env"
        fi
    done
    if docker_answers; then say "docker: $DOCKER_SOCK answers"; else say "docker: $DOCKER_SOCK does not answer"; fi
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    -h | --help | help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0" ;;
    *) die "unknown command '$1' (start | stop | status)" ;;
esac
