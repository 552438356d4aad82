#!/usr/bin/env bash
# `hoist bench build` with its kaniko part, on the test environment of this machine:
# the in-cluster builder (a kubernetes queue, `builder.type: kaniko`) against the docker
# builder on the same small code job, cold builds and cache-hit relaunches.
#
#   scripts/bench-kaniko.sh [ARGS...]    ARGS go to `hoist bench build` (e.g.
#                                        --kaniko-rounds 5, --kaniko-only)
#
# Needs the test environment up (scripts/test-env.sh, run by someone else: this script
# only sources $HOIST_TEST_ENV_FILE) with its cluster, moto, the registries and the
# Kaniko stand-in image ($HOIST_TEST_KANIKO_IMAGE: Kaniko's command line over buildah,
# see scripts/kaniko-standin/, so the figures are those of that executor). The agent
# and kubectl reach the API server through the forwarder on the host's 127.0.0.1
# (HOIST_TEST_K8S_HOST_API=1).
#
# Creates a bucket in moto, a namespace with the `aws-creds` Secret, and the two config
# files (as the e2e test code_job_is_built_in_the_cluster_then_runs_from_the_pushed_image
# does), runs the bench with the release binary ($HOIST_BIN, default
# $CARGO_TARGET_DIR/release/hoist, else target/release/hoist), and deletes the
# namespace, the bucket and its files at the end whatever happens. The images pushed go
# to a repository of their own in the auth registry ($HOIST_TEST_AUTH_REGISTRY/hoist-bench/…).
set -euo pipefail

env_file=${HOIST_TEST_ENV_FILE:-${HOIST_TEST_CACHE_DIR:-$HOME/.cache/hoist}/test-env.sh}
[[ -f "$env_file" ]] || {
    echo "bench-kaniko: $env_file is missing: bring the test environment up first (scripts/test-env.sh)" >&2
    exit 1
}
# shellcheck disable=SC1090
. "$env_file"

need() {
    [[ -n "${!1:-}" ]] || {
        echo "bench-kaniko: \$$1 is not set by $env_file (is the cluster / kaniko part up?)" >&2
        exit 1
    }
}
for v in HOIST_TEST_KUBECONFIG HOIST_TEST_KUBECTL HOIST_TEST_MOTO_URL HOIST_TEST_AUTH_REGISTRY \
    HOIST_TEST_AUTH_REGISTRY_USER HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE \
    HOIST_TEST_KANIKO_IMAGE HOIST_TEST_REGISTRY_BUSYBOX HOIST_TEST_BUSYBOX_IMAGE; do
    need "$v"
done
[[ "${HOIST_TEST_K8S_HOST_API:-0}" == 1 ]] || {
    echo "bench-kaniko: the API server is not forwarded to the host (HOIST_TEST_K8S_HOST_API != 1)" >&2
    exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hoist=${HOIST_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/hoist}
[[ -x "$hoist" ]] || {
    echo "bench-kaniko: no $hoist: cargo build --release -p hoist --locked (or set HOIST_BIN)" >&2
    exit 1
}

kubectl() { "$HOIST_TEST_KUBECTL" --kubeconfig "$HOIST_TEST_KUBECONFIG" "$@"; }

suffix="$(date +%s)-$$"
ns="hoist-bench-kaniko-$suffix"
bucket="hoist-bench-ctx-$suffix"
moto=$HOIST_TEST_MOTO_URL
work=$(mktemp -d)
tagged_base=0

cleanup() {
    local rc=$?
    set +e
    kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1
    # The bucket's objects (the build contexts hoist did not delete), then the bucket.
    local key
    for key in $(curl -s "$moto/$bucket?list-type=2" | grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'); do
        curl -s -o /dev/null -X DELETE "$moto/$bucket/$key"
    done
    curl -s -o /dev/null -X DELETE "$moto/$bucket"
    if [[ $tagged_base == 1 ]]; then
        docker rmi "$HOIST_TEST_REGISTRY_BUSYBOX" >/dev/null 2>&1
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$moto/$bucket")
[[ "$code" == 200 ]] || {
    echo "bench-kaniko: creating bucket $bucket in moto answered $code" >&2
    exit 1
}
kubectl create namespace "$ns" >/dev/null
for _ in $(seq 100); do
    kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1 && break
    sleep 0.2
done
printf '[default]\naws_access_key_id = AKIAHOISTTEST0000001\naws_secret_access_key = hoist-test-secret-key-value\n' |
    kubectl -n "$ns" create secret generic aws-creds --from-file=credentials=/dev/stdin >/dev/null

# Both builders build FROM the plain registry's busybox: the executor pulls it, and the
# local daemon has it under that name too (the same image as $HOIST_TEST_BUSYBOX_IMAGE,
# which test-env pushed there).
if ! docker image inspect "$HOIST_TEST_REGISTRY_BUSYBOX" >/dev/null 2>&1; then
    docker tag "$HOIST_TEST_BUSYBOX_IMAGE" "$HOIST_TEST_REGISTRY_BUSYBOX"
    tagged_base=1
fi

password=$(tr -d '\n' <"$HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE")
auth=$(printf '%s:%s' "$HOIST_TEST_AUTH_REGISTRY_USER" "$password" | base64 -w0)
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$HOIST_TEST_AUTH_REGISTRY" "$auth" >"$work/docker-config.json"
chmod 600 "$work/docker-config.json"

cat >"$work/launch-config.yaml" <<EOF
registry:
  type: oci
  uri: $HOIST_TEST_AUTH_REGISTRY/hoist-bench/app-$suffix
  credentials-file: $work/docker-config.json
stopped_run_timeout: 5s
environment: {type: aws, region: us-east-1}
builder:
  type: kaniko
  build-context-store: s3://$bucket/contexts
  secret-name: aws-creds
  secret-key: credentials
  kaniko-image: $HOIST_TEST_KANIKO_IMAGE
  kaniko-config:
    spec:
      template:
        spec:
          hostNetwork: true
          containers:
          - securityContext: {capabilities: {add: [SYS_ADMIN]}}
            env:
            - {name: S3_ENDPOINT, value: "$moto"}
            - {name: S3_FORCE_PATH_STYLE, value: "true"}
            - {name: AWS_REGION, value: us-east-1}
kubernetes:
  namespace: $ns
  allow-host-network: true
  allow-cap-add: [SYS_ADMIN]
EOF

cat >"$work/queue.yaml" <<EOF
kind: Job
spec:
  template:
    spec:
      containers:
        - name: main
          image: \${image_uri}
          imagePullPolicy: IfNotPresent
      restartPolicy: Never
metadata:
  name: seed-job
  namespace: $ns
apiVersion: batch/v1
EOF

echo "bench-kaniko: namespace $ns, bucket $bucket, executor $HOIST_TEST_KANIKO_IMAGE (the test env's Kaniko stand-in), base $HOIST_TEST_REGISTRY_BUSYBOX"
start=$SECONDS
KUBECONFIG=$HOIST_TEST_KUBECONFIG \
    AWS_ACCESS_KEY_ID=AKIAHOISTTEST0000001 \
    AWS_SECRET_ACCESS_KEY=hoist-test-secret-key-value \
    AWS_ENDPOINT_URL=$moto \
    AWS_REGION=us-east-1 \
    "$hoist" bench build \
    --image "$HOIST_TEST_REGISTRY_BUSYBOX" \
    --kaniko-agent-config "$work/launch-config.yaml" \
    --kaniko-queue-config "$work/queue.yaml" \
    "$@"
echo "bench-kaniko: the bench took $((SECONDS - start)) s"
