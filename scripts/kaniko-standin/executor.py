#!/usr/bin/env python3
"""hoist's image executor: Kaniko's command line, built with Buildah (Python stdlib only).

Installed as /kaniko/executor in two images:
  - hoist-test/kaniko-standin:r<N> (scripts/test-env.sh): the tests' stand-in for Kaniko's
    executor image, which cannot be pulled here;
  - deploy/executor/Dockerfile: the executor image of `builder.type: buildah`.

It needs root and CAP_SYS_ADMIN (buildah's chroot isolation mounts /proc, /sys and bind
mounts for RUN steps); not `privileged`. Storage: /etc/containers/storage.conf (vfs).

KANIKO MODE (the default)                     /kaniko/executor --context=URL --destination=REF ...

  Flags as Kaniko parses them (spf13/pflag): `--flag=value` and `--flag value`;
  booleans as `--flag` or `--flag=true|false`; `-c`, `-f`, `-d`, `-v` for context,
  dockerfile, destination, verbosity. An unknown flag or a positional argument is an
  error (exit 1, "Error: unknown flag: --x").

  --context URL        default dir:///workspace/. The packed context is a .tar.gz:
      s3://BUCKET/KEY      GET signed with SigV4. Endpoint: S3_ENDPOINT (Kaniko's), else
                           AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS's; path style
                           when S3_FORCE_PATH_STYLE=true. Credentials: AWS_ACCESS_KEY_ID +
                           AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), else the profile
                           AWS_PROFILE (default "default") of AWS_SHARED_CREDENTIALS_FILE
                           (default /root/.aws/credentials), else web identity
                           (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN; STS endpoint
                           AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, else AWS's).
                           Region: AWS_REGION, AWS_DEFAULT_REGION, the profile's in
                           AWS_CONFIG_FILE (default /root/.aws/config), else us-east-1;
                           a bucket in another region is followed once (x-amz-bucket-region).
      gs://BUCKET/KEY      JSON API, alt=media. STORAGE_EMULATOR_HOST (host:port or URL):
                           that endpoint, anonymous. Else a bearer token from
                           GOOGLE_APPLICATION_CREDENTIALS (service_account: the JWT grant,
                           signed with openssl; authorized_user: its refresh token), else
                           from the metadata server (GKE workload identity).
      https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY
                           Shared Key with AZURE_STORAGE_ACCESS_KEY, as Kaniko does. Test
                           only: AZURE_STORAGE_BLOB_ENDPOINT (e.g. https://127.0.0.1:5021/
                           devstoreaccount1) replaces https://ACCOUNT.blob.core.windows.net.
      tar://PATH           a local .tar.gz
      dir://PATH, PATH     a local directory, used in place
    Archives are unpacked into /workspace (HOIST_EXECUTOR_WORKSPACE). Members with an
    absolute name, a `..` component, a path through a symlink, a hard link out of the
    archive, or a device/fifo are refused.
  --dockerfile PATH    default Dockerfile, relative to the context (or absolute)
  --destination REF    repeatable; required unless --no-push
  --build-arg K[=V], --label K=V (repeatable), --target STAGE, --custom-platform OS/ARCH
  --insecure           push over http / without TLS verification (--tls-verify=false)
  --insecure-pull      pull the bases the same way
  --skip-tls-verify    both; --skip-tls-verify-pull: pulls only
  --insecure-registry REG, --skip-tls-verify-registry REG (repeatable): as above, for
                       every registry (buildah's --tls-verify is not per registry)
  --digest-file PATH   the pushed image's digest (sha256:...), e.g. /dev/termination-log
  --no-push            build only
  --verbosity LEVEL    panic|fatal|error|warn|info|debug|trace: buildah's --log-level
  --cache, --cache-repo, --cache-ttl, --cache-dir, --cache-copy-layers, --cache-run-layers,
  --snapshot-mode, --compressed-caching, --use-new-run, --single-snapshot, --cleanup,
  --reproducible, --ignore-path, --log-format, --log-timestamp, --push-retry, --force,
  --kaniko-dir         accepted, logged as "ignored by the stand-in"

BUILDAH MODE                   /kaniko/executor buildah [FLAGS] -- BUD_ARGS...

  FLAGS: --context URL (as above), --destination REF (repeatable), --digest-file PATH,
  --insecure, --no-push, --verbosity LEVEL. The context is fetched as above, then
  `buildah bud --tag REF... BUD_ARGS...` runs with the context directory as its working
  directory (so BUD_ARGS end with `.`; `-f` is relative to the context), then every
  --destination is pushed. BUD_ARGS are passed unchanged (--isolation chroot is the
  default through BUILDAH_ISOLATION; --authfile is added when a Docker config exists and
  BUD_ARGS have none).

BOTH MODES
  Registry credentials: $DOCKER_CONFIG/config.json (the images set DOCKER_CONFIG=
  /kaniko/.docker/), else /kaniko/.docker/config.json, as buildah's --authfile.
  Output: one stream (stdout), line by line, flushed. The executor's own lines look like
  Kaniko's (`INFO[0001] ...`); buildah's lines pass through unchanged (`STEP 2/3: RUN
  ...`, `Error: building at STEP "...": ...`). On failure the last line is Kaniko's
  kind of message and exit status 1:
      error building image: error building stage: failed to execute command: STEP 2/3: RUN x: exit status 3
      error building image: error building stage: STEP 3/3: COPY a b: <buildah's cause>
      error building image: error resolving source context: <what was tried, and why>
      error pushing image: failed to push to destination REF: <buildah's cause>
  SIGTERM/SIGINT stop buildah (its process group) and exit 143/130.
"""

import base64
import configparser
import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

START = time.monotonic()
WORKSPACE = os.environ.get("HOIST_EXECUTOR_WORKSPACE", "/workspace")
DEFAULT_CONTEXT = "dir:///workspace/"
AZURE_BLOB_SUFFIXES = (
    ".blob.core.windows.net",
    ".blob.core.chinacloudapi.cn",
    ".blob.core.cloudapi.de",
    ".blob.core.usgovcloudapi.net",
)
HTTP_TIMEOUT = 60
CHUNK = 1 << 20


class Failure(Exception):
    """A failure whose message is the executor's last line."""


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def info(msg):
    out("INFO[%04d] %s" % (int(time.monotonic() - START), msg))


def warn(msg):
    out("WARN[%04d] %s" % (int(time.monotonic() - START), msg))


# --------------------------------------------------------------------------- flags

# name: (kind, shorthand); kind: "str", "bool", "list" (repeatable string)
KANIKO_FLAGS = {
    "context": ("str", "c"),
    "dockerfile": ("str", "f"),
    "destination": ("list", "d"),
    "verbosity": ("str", "v"),
    "build-arg": ("list", None),
    "label": ("list", None),
    "target": ("str", None),
    "custom-platform": ("str", None),
    "digest-file": ("str", None),
    "insecure": ("bool", None),
    "insecure-pull": ("bool", None),
    "skip-tls-verify": ("bool", None),
    "skip-tls-verify-pull": ("bool", None),
    "insecure-registry": ("list", None),
    "skip-tls-verify-registry": ("list", None),
    "no-push": ("bool", None),
    # accepted, ignored
    "cache": ("bool", None),
    "cache-repo": ("str", None),
    "cache-ttl": ("str", None),
    "cache-dir": ("str", None),
    "cache-copy-layers": ("bool", None),
    "cache-run-layers": ("bool", None),
    "snapshot-mode": ("str", None),
    "compressed-caching": ("bool", None),
    "use-new-run": ("bool", None),
    "single-snapshot": ("bool", None),
    "cleanup": ("bool", None),
    "reproducible": ("bool", None),
    "ignore-path": ("list", None),
    "log-format": ("str", None),
    "log-timestamp": ("bool", None),
    "push-retry": ("str", None),
    "force": ("bool", None),
    "kaniko-dir": ("str", None),
    "help": ("bool", "h"),
}
IGNORED = (
    "cache", "cache-repo", "cache-ttl", "cache-dir", "cache-copy-layers", "cache-run-layers",
    "snapshot-mode", "compressed-caching", "use-new-run", "single-snapshot", "cleanup",
    "reproducible", "ignore-path", "log-format", "log-timestamp", "push-retry", "force",
    "kaniko-dir",
)
BUILDAH_FLAGS = {
    "context": ("str", "c"),
    "destination": ("list", "d"),
    "digest-file": ("str", None),
    "insecure": ("bool", None),
    "no-push": ("bool", None),
    "verbosity": ("str", "v"),
    "help": ("bool", "h"),
}
VERBOSITY = ("panic", "fatal", "error", "warn", "info", "debug", "trace")


class UsageError(Exception):
    pass


def parse_bool(name, value):
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise UsageError('invalid argument "%s" for "--%s" flag: strconv.ParseBool: parsing "%s": invalid syntax'
                     % (value, name, value))


def parse_flags(spec, argv, allow_rest):
    """pflag's rules. Returns (values, rest): rest is what follows `--` (allow_rest)."""
    shorts = {s: n for n, (_, s) in spec.items() if s}
    values, set_flags, rest = {}, [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            if not allow_rest:
                if i < len(argv):
                    raise UsageError('unexpected argument "%s"' % argv[i])
                break
            rest = argv[i:]
            break
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            if name not in spec:
                raise UsageError("unknown flag: --%s" % name)
            shown = "--" + name
        elif a.startswith("-") and len(a) > 1:
            short, value = a[1], a[2:]
            eq = ""
            if value.startswith("="):
                eq, value = "=", value[1:]
            elif value:
                eq = "="
            if short not in shorts:
                raise UsageError("unknown shorthand flag: '%s' in %s" % (short, a))
            name = shorts[short]
            shown = "-" + short
        else:
            raise UsageError('unexpected argument "%s" (Kaniko takes flags only)' % a)
        kind = spec[name][0]
        if kind == "bool":
            v = parse_bool(name, value) if eq else True
        else:
            if not eq:
                if i >= len(argv):
                    raise UsageError("flag needs an argument: %s" % shown)
                value = argv[i]
                i += 1
            v = value
        if kind == "list":
            values.setdefault(name, []).append(v)
        else:
            values[name] = v
        set_flags.append(name)
    return values, set_flags, rest


# ------------------------------------------------------------------------------ http

class HttpError(Exception):
    def __init__(self, status, body, headers):
        Exception.__init__(self, "HTTP %d" % status)
        self.status, self.body, self.headers = status, body, headers


def http(method, url, headers=None, data=None, to_file=None):
    """(status, body or None, headers); 2xx only, HttpError for others. OSError when
    nothing answers."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        resp = urllib.request.urlopen(req, timeout=HTTP_TIMEOUT)
    except urllib.error.HTTPError as e:
        body = e.read(4096)
        raise HttpError(e.code, body, e.headers) from None
    with resp:
        if to_file is None:
            return resp.status, resp.read(), resp.headers
        n = 0
        with open(to_file, "wb") as f:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                n += len(chunk)
        return resp.status, n, resp.headers


def reach_error(what, url, err):
    reason = getattr(err, "reason", err)
    return Failure("could not reach %s at %s: %s" % (what, url, reason))


def xml_field(body, name):
    m = re.search(r"<%s>(.*?)</%s>" % (name, name), body.decode("utf-8", "replace"), re.S)
    return m.group(1).strip() if m else ""


# ---------------------------------------------------------------------------- S3

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def sigv4_headers(method, url, region, service, creds, amz_date, extra=None, payload_hash=None):
    """Headers (host, x-amz-*, authorization) for `url`, signed with AWS Signature V4."""
    access_key, secret_key, token = creds
    u = urllib.parse.urlsplit(url)
    host = u.netloc
    payload_hash = payload_hash or EMPTY_SHA256
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    if token:
        headers["x-amz-security-token"] = token
    for k, v in (extra or {}).items():
        headers[k.lower()] = v
    canonical_uri = urllib.parse.quote(urllib.parse.unquote(u.path) or "/", safe="/-_.~")
    query = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
    canonical_query = "&".join(
        "%s=%s" % (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
        for k, v in sorted(query))
    names = sorted(headers)
    canonical_headers = "".join("%s:%s\n" % (n, " ".join(str(headers[n]).split())) for n in names)
    signed = ";".join(names)
    creq = "\n".join([method, canonical_uri, canonical_query, canonical_headers, signed, payload_hash])
    day = amz_date[:8]
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])

    def mac(key, msg):
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k = mac(mac(mac(mac(("AWS4" + secret_key).encode(), day), region), service), "aws4_request")
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s,SignedHeaders=%s,Signature=%s" % (
        access_key, scope, signed, sig)
    del headers["host"]
    return headers


def aws_profile():
    return os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"


def aws_home_file(var, name):
    return os.environ.get(var) or os.path.join(os.environ.get("HOME") or "/root", ".aws", name)


def aws_region():
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(var):
            return os.environ[var]
    path = aws_home_file("AWS_CONFIG_FILE", "config")
    cp = configparser.RawConfigParser()
    try:
        cp.read(path)
    except configparser.Error:
        return "us-east-1"
    p = aws_profile()
    for section in (p if p == "default" else "profile " + p, p):
        if cp.has_option(section, "region"):
            return cp.get(section, "region").strip()
    return "us-east-1"


def aws_endpoint(service_var):
    for var in service_var:
        v = os.environ.get(var, "").strip()
        if v:
            return v if "://" in v else "https://" + v
    return ""


def aws_credentials(region):
    """(access key, secret, session token or None, where from)."""
    ak, sk = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if ak and sk:
        return (ak, sk, os.environ.get("AWS_SESSION_TOKEN") or None), "AWS_ACCESS_KEY_ID"
    path = aws_home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
    profile = aws_profile()
    if os.path.exists(path):
        cp = configparser.RawConfigParser()
        try:
            cp.read(path)
        except configparser.Error as e:
            raise Failure("AWS credentials file %s: %s" % (path, str(e).splitlines()[0]))
        if cp.has_section(profile):
            try:
                ak = cp.get(profile, "aws_access_key_id").strip()
                sk = cp.get(profile, "aws_secret_access_key").strip()
            except configparser.NoOptionError as e:
                raise Failure("AWS credentials file %s, profile [%s]: no %s" % (path, profile, e.option))
            tok = cp.get(profile, "aws_session_token", fallback="").strip() or None
            return (ak, sk, tok), "%s [%s]" % (path, profile)
    token_file, role = os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"), os.environ.get("AWS_ROLE_ARN")
    if token_file and role:
        return web_identity(token_file, role, region), "web identity (%s)" % role
    raise Failure(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, mount a credentials "
        "file with profile [%s] at %s (AWS_SHARED_CREDENTIALS_FILE), or use web identity "
        "(AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)" % (profile, path))


def web_identity(token_file, role, region):
    try:
        with open(token_file) as f:
            token = f.read().strip()
    except OSError as e:
        raise Failure("AWS_WEB_IDENTITY_TOKEN_FILE %s: %s" % (token_file, e.strerror))
    endpoint = aws_endpoint(("AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL")) or "https://sts.%s.amazonaws.com" % region
    q = urllib.parse.urlencode({
        "Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": role,
        "RoleSessionName": os.environ.get("AWS_ROLE_SESSION_NAME") or "hoist-executor-%d" % int(time.time()),
        "WebIdentityToken": token,
    })
    url = endpoint.rstrip("/") + "/"
    try:
        _, body, _ = http("POST", url, {"Content-Type": "application/x-www-form-urlencoded"}, q.encode())
    except HttpError as e:
        raise Failure("STS AssumeRoleWithWebIdentity for %s at %s: HTTP %d %s %s" % (
            role, url, e.status, xml_field(e.body, "Code"), xml_field(e.body, "Message")))
    except OSError as e:
        raise reach_error("STS", url, e)
    ak, sk, st = (xml_field(body, n) for n in ("AccessKeyId", "SecretAccessKey", "SessionToken"))
    if not (ak and sk):
        raise Failure("STS AssumeRoleWithWebIdentity for %s at %s: no credentials in the answer" % (role, url))
    return ak, sk, st or None


def s3_url(endpoint, path_style, region, bucket, key):
    qkey = urllib.parse.quote(key, safe="/-_.~")
    if not endpoint:
        return "https://%s.s3.%s.amazonaws.com/%s" % (bucket, region, qkey)
    u = urllib.parse.urlsplit(endpoint)
    base = endpoint.rstrip("/")
    if path_style:
        return "%s/%s/%s" % (base, bucket, qkey)
    return "%s://%s.%s%s/%s" % (u.scheme, bucket, u.netloc, u.path.rstrip("/"), qkey)


def fetch_s3(url, dest):
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise Failure("%s: expected s3://BUCKET/KEY" % url)
    endpoint = aws_endpoint(("S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"))
    path_style = os.environ.get("S3_FORCE_PATH_STYLE", "").strip().lower() == "true"
    region = aws_region()
    creds, source = aws_credentials(region)
    info("Retrieving %s (endpoint %s, region %s, credentials from %s)" % (
        url, endpoint or "AWS", region, source))
    for attempt in (1, 2):
        target = s3_url(endpoint, path_style, region, bucket, key)
        amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        headers = sigv4_headers("GET", target, region, "s3", creds, amz_date)
        try:
            _, n, _ = http("GET", target, headers, to_file=dest)
            return n
        except HttpError as e:
            other = e.headers.get("x-amz-bucket-region") if e.headers else None
            if attempt == 1 and other and other != region and not endpoint:
                info("Bucket %s is in %s, not %s: retrying there" % (bucket, other, region))
                region = other
                continue
            code = xml_field(e.body, "Code") or "HTTP %d" % e.status
            msg = xml_field(e.body, "Message").rstrip(".")
            hint = {
                "NoSuchBucket": "the bucket does not exist",
                "NoSuchKey": "no object at that key",
                "AccessDenied": "the credentials from %s may not read it (s3:GetObject)" % source,
                "InvalidAccessKeyId": "the access key from %s is unknown" % source,
                "SignatureDoesNotMatch": "the secret key from %s is wrong" % source,
            }.get(code, "")
            raise Failure("GET %s (%s): %s%s%s" % (url, target, code, ": " + msg if msg else "",
                                                  "; " + hint if hint else ""))
        except OSError as e:
            raise reach_error("S3", target, e)
    raise Failure("GET %s: unreachable" % url)


# ---------------------------------------------------------------------------- GCS

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_assertion(sa, scope, now=None):
    """The signed JWT of the service-account grant (RS256 with openssl: no RSA in the
    stdlib). The private key goes to openssl through a 0600 file in a private directory,
    removed at once."""
    now = int(now if now is not None else time.time())
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": sa.get("private_key_id", "")}).encode())
    claims = b64url(json.dumps({
        "iss": sa["client_email"], "scope": scope,
        "aud": sa.get("token_uri") or "https://oauth2.googleapis.com/token",
        "iat": now, "exp": now + 3600,
    }).encode())
    signing_input = ("%s.%s" % (header, claims)).encode()
    d = tempfile.mkdtemp(prefix="hoist-executor-")
    try:
        keyfile = os.path.join(d, "key.pem")
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(sa["private_key"])
        p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", keyfile], input=signing_input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if p.returncode != 0:
        raise Failure("could not sign the service-account JWT with its private_key (openssl: %s)"
                      % p.stderr.decode("utf-8", "replace").strip().splitlines()[:1])
    return "%s.%s" % (signing_input.decode(), b64url(p.stdout))


def gcp_token():
    """(bearer token, where from)."""
    scope = "https://www.googleapis.com/auth/devstorage.read_only"
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path:
        try:
            with open(path) as f:
                cred = json.load(f)
        except (OSError, ValueError) as e:
            raise Failure("GOOGLE_APPLICATION_CREDENTIALS %s: %s" % (path, e))
        kind = cred.get("type")
        if kind == "service_account":
            missing = [k for k in ("client_email", "private_key") if not cred.get(k)]
            if missing:
                raise Failure("GOOGLE_APPLICATION_CREDENTIALS %s: no %s" % (path, ", ".join(missing)))
            token_uri = cred.get("token_uri") or "https://oauth2.googleapis.com/token"
            form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": jwt_assertion(cred, scope)}
            where = "%s (service account %s)" % (path, cred["client_email"])
        elif kind == "authorized_user":
            token_uri = "https://oauth2.googleapis.com/token"
            form = {"grant_type": "refresh_token", "client_id": cred.get("client_id", ""),
                    "client_secret": cred.get("client_secret", ""), "refresh_token": cred.get("refresh_token", "")}
            where = "%s (authorized user)" % path
        else:
            raise Failure("GOOGLE_APPLICATION_CREDENTIALS %s: credentials of type %r are not supported "
                          "(service_account, authorized_user; or unset it to use the metadata server)"
                          % (path, kind))
        try:
            _, body, _ = http("POST", token_uri, {"Content-Type": "application/x-www-form-urlencoded"},
                              urllib.parse.urlencode(form).encode())
        except HttpError as e:
            raise Failure("token request for %s to %s: HTTP %d %s" % (
                where, token_uri, e.status, e.body.decode("utf-8", "replace")[:200]))
        except OSError as e:
            raise reach_error("Google's token endpoint", token_uri, e)
        return json.loads(body)["access_token"], where
    host = os.environ.get("GCE_METADATA_HOST") or "metadata.google.internal"
    url = "http://%s/computeMetadata/v1/instance/service-accounts/default/token" % host
    try:
        _, body, _ = http("GET", url, {"Metadata-Flavor": "Google"})
    except (HttpError, OSError) as e:
        raise Failure("no GCP credentials: GOOGLE_APPLICATION_CREDENTIALS is not set and the metadata "
                      "server %s did not give a token (%s); mount a service-account JSON and set "
                      "GOOGLE_APPLICATION_CREDENTIALS, or use workload identity" % (url, e))
    return json.loads(body)["access_token"], "the metadata server"


def fetch_gcs(url, dest):
    bucket, _, key = url[len("gs://"):].partition("/")
    if not bucket or not key:
        raise Failure("%s: expected gs://BUCKET/KEY" % url)
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    headers = {}
    if emulator:
        base = emulator if "://" in emulator else "http://" + emulator
        source = "none (STORAGE_EMULATOR_HOST)"
    else:
        base = "https://storage.googleapis.com"
        token, source = gcp_token()
        headers["Authorization"] = "Bearer " + token
    target = "%s/storage/v1/b/%s/o/%s?alt=media" % (
        base.rstrip("/"), urllib.parse.quote(bucket, safe=""), urllib.parse.quote(key, safe=""))
    info("Retrieving %s (%s, credentials: %s)" % (url, base, source))
    try:
        _, n, _ = http("GET", target, headers, to_file=dest)
        return n
    except HttpError as e:
        try:
            msg = json.loads(e.body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = e.body.decode("utf-8", "replace")[:200]
        hint = {404: "no such bucket or object", 403: "the credentials from %s may not read it" % source,
                401: "the credentials from %s were refused" % source}.get(e.status, "")
        raise Failure("GET %s (%s): HTTP %d %s%s" % (url, target, e.status, msg, "; " + hint if hint else ""))
    except OSError as e:
        raise reach_error("GCS", target, e)


# -------------------------------------------------------------------------- Azure

def azure_shared_key(method, url, account, key_b64, headers):
    """The Authorization header of Azure Storage's Shared Key scheme (blob service)."""
    u = urllib.parse.urlsplit(url)
    h = {k.lower(): v for k, v in headers.items()}
    std = ["content-encoding", "content-language", "content-length", "content-md5", "content-type",
           "date", "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range"]
    vals = [h.get(n, "") for n in std]
    if vals[2] == "0":
        vals[2] = ""
    canon_headers = "".join("%s:%s\n" % (n, " ".join(h[n].split())) for n in sorted(h) if n.startswith("x-ms-"))
    canon_res = "/%s%s" % (account, u.path or "/")
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    for name in sorted(q, key=str.lower):
        canon_res += "\n%s:%s" % (name.lower(), ",".join(sorted(q[name])))
    sts = method + "\n" + "\n".join(vals) + "\n" + canon_headers + canon_res
    try:
        key = base64.b64decode(key_b64, validate=True)
    except ValueError:
        raise Failure("AZURE_STORAGE_ACCESS_KEY is not base64 (an account key is)")
    sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
    return "SharedKey %s:%s" % (account, sig)


def fetch_azure(url, dest):
    u = urllib.parse.urlsplit(url)
    host = (u.hostname or "").lower()
    if not host.endswith(AZURE_BLOB_SUFFIXES):
        raise Failure("url provided for https context is not in a supported format, please use the "
                      "https url for Azure Blob Storage (https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY): %s" % url)
    account = host.split(".")[0]
    path = u.path.lstrip("/")
    if "/" not in path:
        raise Failure("%s: expected https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY" % url)
    key_b64 = os.environ.get("AZURE_STORAGE_ACCESS_KEY", "").strip()
    if not key_b64:
        raise Failure("AZURE_STORAGE_ACCESS_KEY is not set: Kaniko reads Azure Blob Storage with the "
                      "storage account's access key (mount it from a Secret as that variable)")
    endpoint = os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT", "").strip().rstrip("/")
    base = endpoint or "https://%s" % u.netloc
    target = "%s/%s" % (base, urllib.parse.quote(urllib.parse.unquote(path), safe="/-_.~"))
    headers = {"x-ms-date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
               "x-ms-version": "2021-08-06"}
    headers["Authorization"] = azure_shared_key("GET", target, account, key_b64, headers)
    info("Retrieving %s (%s, Shared Key of account %s)" % (url, base, account))
    try:
        _, n, _ = http("GET", target, headers, to_file=dest)
        return n
    except HttpError as e:
        code = (e.headers.get("x-ms-error-code") if e.headers else "") or xml_field(e.body, "Code") or ""
        hint = {"ContainerNotFound": "the container does not exist", "BlobNotFound": "no blob at that name",
                "AuthenticationFailed": "AZURE_STORAGE_ACCESS_KEY is not the key of account %s" % account,
                "InvalidAuthenticationInfo": "AZURE_STORAGE_ACCESS_KEY is not a key of this service",
                "AuthorizationFailure": "the key may not read it"}.get(code, "")
        raise Failure("GET %s (%s): HTTP %d %s%s" % (url, target, e.status, code, "; " + hint if hint else ""))
    except OSError as e:
        raise reach_error("Azure Blob Storage", target, e)


# ------------------------------------------------------------------------- context

# The checks are ours (absolute symlinks are kept, as Docker keeps them); a Python with
# PEP 706's filters must not apply its own default on top.
EXTRACT_KW = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def safe_extract(archive, dest):
    """Unpack a .tar(.gz) into dest, refusing members that would land outside it."""
    dest = os.path.realpath(dest)
    os.makedirs(dest, exist_ok=True)
    count = 0
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise Failure("the context is not a tar.gz archive: %s" % e)
    with tf:
        for m in tf:
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            if name in ("", "."):
                continue
            parts = name.split("/")
            if name.startswith("/") or ".." in parts:
                raise Failure("refusing context member %r: absolute or with a '..' component" % m.name)
            target = os.path.join(dest, name.rstrip("/"))
            parent = os.path.realpath(os.path.dirname(target))
            if parent != dest and not parent.startswith(dest + os.sep):
                raise Failure("refusing context member %r: its directory leads out of the context "
                              "through a symlink" % m.name)
            if m.islnk():
                link = m.linkname
                while link.startswith("./"):
                    link = link[2:]
                src = os.path.realpath(os.path.join(dest, link))
                if link.startswith("/") or ".." in link.split("/") or not src.startswith(dest + os.sep):
                    raise Failure("refusing context member %r: a hard link to %r, outside the archive"
                                  % (m.name, m.linkname))
            elif not (m.isdir() or m.isreg() or m.issym()):
                raise Failure("refusing context member %r: not a file, directory or link" % m.name)
            if os.path.lexists(target) and not os.path.isdir(target):
                os.unlink(target)
            m.name = name
            if m.islnk():
                m.linkname = link
            try:
                tf.extract(m, dest, set_attrs=not m.issym(), numeric_owner=True, **EXTRACT_KW)
            except (tarfile.TarError, OSError) as e:
                raise Failure("unpacking context member %r: %s" % (m.name, e))
            count += 1
    return count


def resolve_context(url):
    """The build's context directory."""
    if url.startswith("dir://"):
        path = url[len("dir://"):]
    elif "://" not in url:
        path = url
    else:
        path = None
    if path is not None:
        if not os.path.isdir(path):
            raise Failure("context directory %s does not exist" % path)
        info("Using the context directory %s" % path)
        return path
    scheme = url.split("://", 1)[0].lower()
    fetchers = {"s3": fetch_s3, "gs": fetch_gcs, "https": fetch_azure}
    if scheme == "tar":
        archive = url[len("tar://"):]
        if not os.path.isfile(archive):
            raise Failure("context archive %s does not exist" % archive)
    elif scheme in fetchers:
        fd, archive = tempfile.mkstemp(prefix="context-", suffix=".tar.gz",
                                       dir="/kaniko" if os.path.isdir("/kaniko") else None)
        os.close(fd)
        n = fetchers[scheme](url, archive)
        info("Retrieved %s (%d bytes)" % (url, n))
    else:
        raise Failure("unsupported context %s: use s3://, gs://, "
                      "https://ACCOUNT.blob.core.windows.net/, tar:// or dir://" % url)
    count = safe_extract(archive, WORKSPACE)
    if scheme != "tar":
        os.unlink(archive)
    info("Unpacked %d entries of the build context into %s" % (count, WORKSPACE))
    return WORKSPACE


# --------------------------------------------------------------------------- buildah

CHILD = {"proc": None}


def on_signal(signum, _frame):
    p = CHILD["proc"]
    if p is not None and p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    out("WARN[%04d] stopped by signal %d" % (int(time.monotonic() - START), signum))
    os._exit(128 + signum)


STEP_RE = re.compile(r"^STEP (\d+)/(\d+): (.*)$")
BUILD_ERR_RE = re.compile(r'^(?:Error: )?(?:error )?building at STEP "(.*?)": (.*)$')


def run_buildah(args, cwd=None):
    """Runs buildah, passing its lines through. (exit status, last STEP line, failing step
    and cause from buildah's error line, last `Error:` line)."""
    info("Running: buildah %s" % " ".join(args))
    state = {"step": None, "failed": None, "error": None}
    # buildah takes $DOCKER_CONFIG/config.json as its default --authfile and refuses to
    # push when that file is missing; the executor passes --authfile itself.
    env = dict(os.environ)
    env.pop("DOCKER_CONFIG", None)
    p = subprocess.Popen(["buildah"] + args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    CHILD["proc"] = p
    for raw in iter(p.stdout.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        out(line)
        m = STEP_RE.match(line)
        if m:
            state["step"] = line
            continue
        m = BUILD_ERR_RE.match(line)
        if m:
            state["failed"] = (m.group(1), m.group(2))
        elif line.startswith("Error: ") or line.startswith("error "):
            state["error"] = line.split(": ", 1)[1] if line.startswith("Error: ") else line
    rc = p.wait()
    CHILD["proc"] = None
    return rc, state


def build_failure(state, rc):
    step, failed, err = state["step"], state["failed"], state["error"]
    if failed:
        text, cause = failed
        where = text
        if step:
            m = STEP_RE.match(step)
            if m and m.group(3).strip() == text.strip():
                where = "STEP %s/%s: %s" % (m.group(1), m.group(2), text)
        cause = re.sub(r"^error while running runtime: ", "", cause)
        if text.split(None, 1)[0].upper() == "RUN":
            return "error building image: error building stage: failed to execute command: %s: %s" % (where, cause)
        return "error building image: error building stage: %s: %s" % (where, cause)
    if step:
        return "error building image: error building stage: %s: %s" % (
            step, err or "buildah exited with status %d" % rc)
    return "error building image: %s" % (err or "buildah exited with status %d" % rc)


def authfile():
    for d in (os.environ.get("DOCKER_CONFIG"), "/kaniko/.docker"):
        if d and os.path.isfile(os.path.join(d, "config.json")):
            return os.path.join(d, "config.json")
    return None


def push_all(destinations, image, tls_verify, digest_file, log_level):
    auth = authfile()
    digest = None
    for dest in destinations:
        tmp = tempfile.NamedTemporaryFile(prefix="digest-", delete=False)
        tmp.close()
        args = list(log_level) + ["push", "--digestfile", tmp.name]
        if auth:
            args += ["--authfile", auth]
        if not tls_verify:
            args += ["--tls-verify=false"]
        args += [image, "docker://" + dest]
        rc, state = run_buildah(args)
        with open(tmp.name) as f:
            got = f.read().strip()
        os.unlink(tmp.name)
        if rc != 0:
            raise Failure("error pushing image: failed to push to destination %s: %s" % (
                dest, state["error"] or "buildah push exited with status %d" % rc))
        digest = digest or got
        info("Pushed %s@%s" % (dest, got))
    if digest_file and digest:
        with open(digest_file, "w") as f:
            f.write(digest)


def log_level_args(verbosity):
    if not verbosity:
        return []
    if verbosity not in VERBOSITY:
        raise UsageError('invalid argument "%s" for "-v, --verbosity" flag: not a valid log level (%s)'
                         % (verbosity, "|".join(VERBOSITY)))
    return ["--log-level", verbosity]


def kaniko_main(argv):
    values, set_flags, _ = parse_flags(KANIKO_FLAGS, argv, allow_rest=False)
    if values.get("help"):
        out(__doc__)
        return 0
    for name in IGNORED:
        if name in set_flags:
            info("--%s: ignored by the stand-in" % name)
    log_level = log_level_args(values.get("verbosity"))
    destinations = values.get("destination", [])
    no_push = values.get("no-push", False)
    if not destinations and not no_push:
        raise UsageError("you must provide --destination, or use --no-push")
    skip_all = values.get("skip-tls-verify", False) or bool(values.get("skip-tls-verify-registry"))
    push_tls = not (values.get("insecure", False) or skip_all or bool(values.get("insecure-registry")))
    pull_tls = not (values.get("insecure-pull", False) or skip_all or values.get("skip-tls-verify-pull", False)
                    or bool(values.get("insecure-registry")))
    try:
        ctx = resolve_context(values.get("context", DEFAULT_CONTEXT))
    except Failure as e:
        raise Failure("error building image: error resolving source context: %s" % e)
    dockerfile = values.get("dockerfile", "Dockerfile")
    if not os.path.isabs(dockerfile):
        dockerfile = os.path.join(ctx, dockerfile)
    if not os.path.isfile(dockerfile):
        raise Failure("error building image: dockerfile %s does not exist in the context" % values.get(
            "dockerfile", "Dockerfile"))
    image = destinations[0] if destinations else "localhost/hoist-executor-build:latest"
    args = log_level + ["bud", "--isolation", "chroot", "-f", dockerfile]
    for d in destinations or [image]:
        args += ["--tag", d]
    for a in values.get("build-arg", []):
        args += ["--build-arg", a]
    for a in values.get("label", []):
        args += ["--label", a]
    if values.get("target"):
        args += ["--target", values["target"]]
    if values.get("custom-platform"):
        args += ["--platform", values["custom-platform"]]
    if not pull_tls:
        args += ["--tls-verify=false"]
    auth = authfile()
    if auth:
        args += ["--authfile", auth]
    args.append(ctx)
    rc, state = run_buildah(args)
    if rc != 0:
        raise Failure(build_failure(state, rc))
    if no_push:
        info("Skipping push to container registry due to --no-push flag")
        return 0
    push_all(destinations, image, push_tls, values.get("digest-file"), log_level)
    return 0


def buildah_main(argv):
    values, _, bud = parse_flags(BUILDAH_FLAGS, argv, allow_rest=True)
    if values.get("help"):
        out(__doc__)
        return 0
    log_level = log_level_args(values.get("verbosity"))
    destinations = values.get("destination", [])
    no_push = values.get("no-push", False)
    if not destinations and not no_push:
        raise UsageError("you must provide --destination, or use --no-push")
    if not bud:
        raise UsageError("buildah mode: the arguments of `buildah bud` follow `--` (ending with the context, `.`)")
    try:
        ctx = resolve_context(values.get("context", DEFAULT_CONTEXT))
    except Failure as e:
        raise Failure("error building image: error resolving source context: %s" % e)
    image = destinations[0] if destinations else "localhost/hoist-executor-build:latest"
    args = log_level + ["bud"]
    for d in destinations or [image]:
        args += ["--tag", d]
    auth = authfile()
    if auth and not any(a == "--authfile" or a.startswith("--authfile=") for a in bud):
        args += ["--authfile", auth]
    rc, state = run_buildah(args + bud, cwd=ctx)
    if rc != 0:
        raise Failure(build_failure(state, rc))
    if no_push:
        info("Skipping push to container registry due to --no-push flag")
        return 0
    push_all(destinations, image, not values.get("insecure", False), values.get("digest-file"), log_level)
    return 0


def main(argv):
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if argv[:1] == ["buildah"]:
            return buildah_main(argv[1:])
        return kaniko_main(argv)
    except UsageError as e:
        out("Error: %s" % e)
        out("Run '/kaniko/executor --help' for usage.")
        return 1
    except Failure as e:
        out(" ".join(str(e).split()))  # one line, whatever the servers answered
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
