//! From a run and its queue's SageMaker config to the `CreateTrainingJob` request the
//! runner sends ([`build`] → [`Request`]).
//!
//! Pure: JSON in, JSON out, so `hoist launch --dry-run` shows exactly what would be
//! sent, offline. The run's `resource_config` has its macros filled and the run's
//! resource args deep-merged over the queue config already.
//!
//! What [`build`] does to the config (a partial `CreateTrainingJob` request):
//! - **Name.** `TrainingJobName` when the config sets one (after macros, e.g.
//!   `launch-${run_id}`: it must be unique per run), else `hoist-<run id>` ([`job_name`]).
//!   Either way the name is known from the run alone, so a restarted agent finds the job.
//! - **Role.** `RoleArn` as written when it is an ARN; a role name (`SageMakerRole`,
//!   `service-role/AmazonSageMaker-ExecutionRole`) becomes
//!   `arn:PARTITION:iam::ACCOUNT:role/NAME` with the agent's account
//!   ([`SpecContext::account`], from STS `GetCallerIdentity`).
//! - **Image and command.** `AlgorithmSpecification.TrainingImage`: the config's when it
//!   names one (or an `AlgorithmName`), else the run's image. `TrainingInputMode`
//!   defaults to `File`. The run's entry point replaces `ContainerEntrypoint` and its
//!   args replace `ContainerArguments`, each only when the run has them. The image must
//!   be in Amazon ECR (`ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]/…`), the only registry
//!   SageMaker pulls from, unless `TrainingImageConfig.TrainingRepositoryAccessMode` is
//!   `Vpc` (a private registry in the job's VPC); anything else is refused before
//!   anything is created, naming the agent's `registry` setting.
//! - **Environment.** hoist's `HOIST_*` variables and the run's env over the config's
//!   `Environment` (hoist's win). SageMaker shows `Environment` to anyone allowed
//!   `DescribeTrainingJob`, so a variable whose name looks secret or whose value looks
//!   like a credential is refused, pointing at Secrets Manager. The one exception is
//!   `HOIST_RUN_TOKEN`: the job needs it to talk to hoist, and it is scoped to this run
//!   and worthless once the run ends. SageMaker's limits (100 variables, values of at
//!   most 512 characters) are checked; `HOIST_RUN_CONFIG` is left out (with a note)
//!   when it is longer than that.
//! - **Tags.** The config's `Tags`, plus `hoist:run-id`, `hoist:agent`, `hoist:queue`
//!   (replacing tags of those keys), values made tag-safe.
//! - **Output.** `OutputDataConfig.S3OutputPath` must be `s3://BUCKET/PREFIX`. An
//!   `https://` S3 URL (path style `https://s3.REGION.amazonaws.com/BUCKET/KEY` as in
//!   W&B's docs, or virtual-hosted `https://BUCKET.s3.REGION.amazonaws.com/KEY`) is
//!   rewritten, with a note; any other URL is refused with the fix.
//! - `ResourceConfig` and `StoppingCondition` are required (refused with an example
//!   when missing): hoist never guesses instances or a time limit.

use hoist_core::secret::{MASKED, looks_like_credential, looks_secret};
use serde_json::{Map, Value, json};

use crate::runners::{JobSpec, RunnerError};

/// The CloudWatch Logs group of every training job.
pub const LOG_GROUP: &str = "/aws/sagemaker/TrainingJobs";
/// The tags on every training job hoist creates.
pub const TAG_RUN_ID: &str = "hoist:run-id";
pub const TAG_AGENT: &str = "hoist:agent";
pub const TAG_QUEUE: &str = "hoist:queue";

/// SageMaker's limits on `Environment`.
const MAX_ENV_VARS: usize = 100;
const MAX_ENV_VALUE: usize = 512;
const MAX_ENV_NAME: usize = 512;

/// What [`build`] needs besides the run.
#[derive(Debug, Clone, Copy)]
pub struct SpecContext<'a> {
    /// The agent's region (for the role ARN's partition).
    pub region: &'a str,
    /// The agent's account, to expand a role name; `None` (a dry run without STS)
    /// writes `ACCOUNT_ID` in its place.
    pub account: Option<&'a str>,
}

/// The request for one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub name: String,
    /// The `CreateTrainingJob` body.
    pub body: Value,
    /// What hoist changed that the run's log should say (a rewritten S3 path, a
    /// variable left out).
    pub notes: Vec<String>,
}

impl Request {
    /// The body with `Environment` values that could be secrets masked (the run token,
    /// secret-looking names or values), and any other string that looks like a
    /// credential: for dry runs and messages.
    pub fn masked(&self) -> Value {
        fn credentials(v: &mut Value) {
            match v {
                Value::String(s) if looks_like_credential(s) => *s = MASKED.into(),
                Value::Array(a) => a.iter_mut().for_each(credentials),
                Value::Object(m) => m.values_mut().for_each(credentials),
                _ => {}
            }
        }
        let mut body = self.body.clone();
        credentials(&mut body);
        if let Some(Value::Object(env)) = body.get_mut("Environment") {
            for (k, v) in env.iter_mut() {
                let secret = k == "HOIST_RUN_TOKEN"
                    || looks_secret(k)
                    || v.as_str().is_some_and(looks_like_credential);
                if secret {
                    *v = Value::String(MASKED.into());
                }
            }
        }
        body
    }

    /// Whether the training job runs on several instances (its log streams are then
    /// prefixed with their names).
    pub fn instances(&self) -> u64 {
        instance_count(&self.body)
    }
}

/// How many instances a request asks for (`ResourceConfig.InstanceCount`, or the sum
/// over `InstanceGroups`); 1 when it says nothing readable.
pub fn instance_count(body: &Value) -> u64 {
    let rc = &body["ResourceConfig"];
    if let Some(groups) = rc["InstanceGroups"].as_array() {
        let n: u64 = groups
            .iter()
            .filter_map(|g| count(&g["InstanceCount"]))
            .sum();
        return n.max(1);
    }
    count(&rc["InstanceCount"]).unwrap_or(1).max(1)
}

fn count(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// The training job name of `job`: the config's `TrainingJobName` when it is a
/// string, else `hoist-<run id>` (lowercase, `-` for anything else, at most 63).
pub fn job_name(job: &JobSpec) -> Result<String, RunnerError> {
    match job.resource_config.get("TrainingJobName") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !valid_job_name(s) {
                return Err(RunnerError::Refused(format!(
                    "TrainingJobName: {s:?} is not a training job name (1 to 63 letters, digits and `-`, starting and ending with a letter or digit); leave it out and hoist names the job hoist-<run id>"
                )));
            }
            return Ok(s.clone());
        }
        Some(other) => {
            return Err(RunnerError::Refused(format!(
                "TrainingJobName: expected a string, found {other}"
            )));
        }
    }
    let id: String = job
        .run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("hoist-{}", id.trim_matches('-'));
    name.truncate(63);
    Ok(name.trim_end_matches('-').to_string())
}

/// SageMaker's `TrainingJobName` pattern: `[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`.
pub fn valid_job_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.len() <= 63
}

/// True when the config's `RoleArn` is a role name that needs the agent's account.
pub fn needs_account(config: &Value) -> bool {
    config
        .get("RoleArn")
        .and_then(Value::as_str)
        .is_some_and(|r| !r.starts_with("arn:"))
}

/// The ARN partition of a region.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// True for an image SageMaker can pull: one in Amazon ECR.
pub fn is_ecr_image(image: &str) -> bool {
    let Some((host, rest)) = image.split_once('/') else {
        return false;
    };
    if rest.is_empty() {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let tail_ok = matches!(labels.as_slice(), [.., "amazonaws", "com"])
        || matches!(labels.as_slice(), [.., "amazonaws", "com", "cn"]);
    tail_ok
        && labels.len() >= 6
        && labels[0].len() == 12
        && labels[0].bytes().all(|b| b.is_ascii_digit())
        && labels[1] == "dkr"
        && labels[2].starts_with("ecr")
        && !labels[3].is_empty()
}

/// Builds the `CreateTrainingJob` request of `job`.
pub fn build(job: &JobSpec, cx: &SpecContext<'_>) -> Result<Request, RunnerError> {
    let Value::Object(config) = &job.resource_config else {
        return Err(RunnerError::Refused(format!(
            "a sagemaker queue config is a partial CreateTrainingJob request (a mapping), found {}",
            job.resource_config
        )));
    };
    let mut body = config.clone();
    let mut notes = Vec::new();
    let name = job_name(job)?;
    body.insert("TrainingJobName".into(), Value::String(name.clone()));

    for (key, example) in [
        (
            "ResourceConfig",
            "{InstanceType: ml.m5.xlarge, InstanceCount: 1, VolumeSizeInGB: 30}",
        ),
        ("StoppingCondition", "{MaxRuntimeInSeconds: 86400}"),
    ] {
        if !body.get(key).is_some_and(Value::is_object) {
            return Err(RunnerError::Refused(format!(
                "{key} is required in a sagemaker queue config (hoist does not guess it), e.g. {key}: {example}"
            )));
        }
    }

    // Role.
    match body.get("RoleArn") {
        Some(Value::String(r)) if r.starts_with("arn:") => {}
        Some(Value::String(r)) if !r.trim().is_empty() => {
            let account = cx.account.unwrap_or("ACCOUNT_ID");
            let arn = format!(
                "arn:{}:iam::{account}:role/{}",
                partition(cx.region),
                r.trim().trim_start_matches('/')
            );
            body.insert("RoleArn".into(), Value::String(arn));
        }
        _ => {
            return Err(RunnerError::Refused(
                "RoleArn is required: the IAM role SageMaker runs the job as (an ARN, or a role name of the agent's account)".into(),
            ));
        }
    }

    // Output path.
    let out = body
        .get("OutputDataConfig")
        .and_then(|o| o.get("S3OutputPath"))
        .and_then(Value::as_str)
        .map(str::to_string);
    match out {
        None => {
            return Err(RunnerError::Refused(
                "OutputDataConfig.S3OutputPath is required: where SageMaker writes the model, e.g. OutputDataConfig: {S3OutputPath: s3://BUCKET/PREFIX}".into(),
            ));
        }
        Some(p) if p.starts_with("s3://") => {}
        Some(p) => match s3_url_from_https(&p) {
            Some(s3) => {
                notes.push(format!(
                    "OutputDataConfig.S3OutputPath {p} rewritten to {s3} (SageMaker writes to s3:// URLs)"
                ));
                body["OutputDataConfig"]["S3OutputPath"] = Value::String(s3);
            }
            None => {
                return Err(RunnerError::Refused(format!(
                    "OutputDataConfig.S3OutputPath: {p:?} is not an S3 location hoist can read a bucket from; write it as s3://BUCKET/PREFIX"
                )));
            }
        },
    }

    // Image and command.
    let alg = body
        .entry("AlgorithmSpecification")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(alg) = alg else {
        return Err(RunnerError::Refused(format!(
            "AlgorithmSpecification: expected a mapping, found {alg}"
        )));
    };
    let configured = alg
        .get("TrainingImage")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && !s.contains("${"))
        .map(str::to_string);
    if configured.is_none() && !alg.contains_key("AlgorithmName") {
        let Some(image) = job.image.clone() else {
            return Err(RunnerError::start(
                "a SageMaker training job needs an image: launch the run with an image, or give it a git/code source and the agent a `registry` in ECR to build into",
            ));
        };
        alg.insert("TrainingImage".into(), Value::String(image));
    }
    alg.entry("TrainingInputMode")
        .or_insert_with(|| Value::String("File".into()));
    if let Some(ep) = &job.entry_point {
        alg.insert("ContainerEntrypoint".into(), json!(ep));
    }
    if !job.args.is_empty() {
        alg.insert("ContainerArguments".into(), json!(job.args));
    }
    let vpc_registry = alg
        .get("TrainingImageConfig")
        .and_then(|c| c.get("TrainingRepositoryAccessMode"))
        .and_then(Value::as_str)
        == Some("Vpc");
    if let Some(image) = alg.get("TrainingImage").and_then(Value::as_str)
        && !vpc_registry
        && !is_ecr_image(image)
    {
        return Err(RunnerError::Refused(format!(
            "SageMaker pulls the training image itself, from Amazon ECR only, and {image} is not in ECR (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG): push it there, or give the agent a `registry` in ECR (registry: {{type: ecr, uri: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY}}) so that hoist builds and pushes the run's image there (a private registry in the job's VPC needs AlgorithmSpecification.TrainingImageConfig.TrainingRepositoryAccessMode: Vpc)"
        )));
    }

    // Environment.
    let mut env: Map<String, Value> = match body.remove("Environment") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(RunnerError::Refused(format!(
                "Environment: expected a mapping of names to strings, found {other}"
            )));
        }
    };
    for (k, v) in job.env.iter() {
        env.insert(k.clone(), Value::String(v.clone()));
    }
    let mut secret_like = Vec::new();
    let mut problems = Vec::new();
    for (k, v) in &env {
        let Some(s) = v.as_str() else {
            problems.push(format!("Environment.{k}: expected a string, found {v}"));
            continue;
        };
        if k == "HOIST_RUN_TOKEN" {
            continue;
        }
        if looks_secret(k) || looks_like_credential(s) {
            secret_like.push(k.clone());
        }
        if k.len() > MAX_ENV_NAME {
            problems.push(format!(
                "Environment: a variable name is longer than SageMaker's {MAX_ENV_NAME} characters"
            ));
        }
    }
    if !secret_like.is_empty() {
        return Err(RunnerError::Refused(format!(
            "Environment {} {}, and SageMaker shows a training job's Environment to anyone allowed sagemaker:DescribeTrainingJob: keep secrets in AWS Secrets Manager (or SSM Parameter Store) and read them in the job with its role (RoleArn), or pass only their names",
            secret_like.join(", "),
            if secret_like.len() == 1 {
                "looks like a secret"
            } else {
                "look like secrets"
            }
        )));
    }
    if let Some(Value::String(c)) = env.get("HOIST_RUN_CONFIG")
        && c.chars().count() > MAX_ENV_VALUE
    {
        notes.push(format!(
            "HOIST_RUN_CONFIG left out of the training job's Environment: it is {} characters long and SageMaker allows {MAX_ENV_VALUE}",
            c.chars().count()
        ));
        env.remove("HOIST_RUN_CONFIG");
    }
    for (k, v) in &env {
        if let Some(s) = v.as_str()
            && s.chars().count() > MAX_ENV_VALUE
        {
            problems.push(format!(
                "Environment.{k}: {} characters, SageMaker allows at most {MAX_ENV_VALUE}",
                s.chars().count()
            ));
        }
    }
    if env.len() > MAX_ENV_VARS {
        problems.push(format!(
            "Environment: {} variables (hoist's HOIST_* included), SageMaker allows at most {MAX_ENV_VARS}",
            env.len()
        ));
    }
    if !problems.is_empty() {
        return Err(RunnerError::Refused(problems.join("; ")));
    }
    body.insert("Environment".into(), Value::Object(env));

    // Tags.
    let mut tags: Vec<Value> = match body.remove("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(RunnerError::Refused(format!(
                "Tags: expected a list of {{Key, Value}}, found {other}"
            )));
        }
    };
    let ours = [
        (TAG_RUN_ID, job.run_id.as_str()),
        (TAG_AGENT, job.agent_name.as_str()),
        (TAG_QUEUE, job.queue.as_str()),
    ];
    tags.retain(|t| {
        !ours
            .iter()
            .any(|(k, _)| t.get("Key").and_then(Value::as_str) == Some(*k))
    });
    for (k, v) in ours {
        tags.push(json!({"Key": k, "Value": tag_value(v)}));
    }
    body.insert("Tags".into(), Value::Array(tags));

    Ok(Request {
        name,
        body: Value::Object(body),
        notes,
    })
}

/// A tag value SageMaker accepts: letters, digits, spaces and `_.:/=+-@`, at most 256
/// characters; anything else becomes `_`.
pub fn tag_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

/// `s3://BUCKET/KEY` for an `https://` S3 URL that names its bucket unambiguously:
/// path style (`https://s3.amazonaws.com/B/K`, `https://s3.REGION.amazonaws.com/B/K`,
/// `https://s3-REGION.amazonaws.com/B/K`, dual-stack too) or virtual-hosted
/// (`https://B.s3.amazonaws.com/K`, `https://B.s3.REGION.amazonaws.com/K`). `None` for
/// anything else (another host, no bucket, a query or fragment).
pub fn s3_url_from_https(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    if rest.contains(['?', '#']) {
        return None;
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.to_ascii_lowercase();
    let base = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = base.split('.').collect();
    let is_s3 = |l: &str| l == "s3" || l.starts_with("s3-");
    // Path style: the host starts with the S3 label.
    if labels.first().is_some_and(|l| is_s3(l)) && labels.len() <= 3 {
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return None;
        }
        return Some(format!("s3://{bucket}/{key}"));
    }
    // Virtual-hosted: BUCKET.s3[.REGION] (a bucket name may hold dots).
    let s3_at = labels.iter().position(|l| is_s3(l))?;
    if s3_at == 0 || labels.len() - s3_at > 3 {
        return None;
    }
    let bucket = labels[..s3_at].join(".");
    Some(format!("s3://{bucket}/{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(config: Value) -> JobSpec {
        JobSpec {
            run_id: "abc123def456".into(),
            run_name: "n".into(),
            project: "p".into(),
            entity: "e".into(),
            queue: "e/q".into(),
            agent_name: "agent-1".into(),
            image: Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/train:v1".into()),
            entry_point: Some(vec!["python".into(), "train.py".into()]),
            args: vec!["--epochs".into(), "3".into()],
            env: [
                ("HOIST_RUN_ID", "abc123def456"),
                ("HOIST_RUN_TOKEN", "hrt_0123456789abcdef0123"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            resource_config: config,
            labels: BTreeMap::new(),
            source: None,
        }
    }

    fn seed() -> Value {
        json!({
            "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "ResourceConfig": {"InstanceType": "ml.m4.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 2},
            "OutputDataConfig": {"S3OutputPath": "https://s3.region-code.amazonaws.com/bucket-name/key-name"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600}
        })
    }

    const CX: SpecContext<'static> = SpecContext {
        region: "us-east-1",
        account: Some("123456789012"),
    };

    #[test]
    fn the_seed_config_becomes_a_full_request() {
        let r = build(&job(seed()), &CX).unwrap();
        assert_eq!(r.name, "hoist-abc123def456");
        let b = &r.body;
        assert_eq!(b["TrainingJobName"], "hoist-abc123def456");
        assert_eq!(
            b["OutputDataConfig"]["S3OutputPath"],
            "s3://bucket-name/key-name"
        );
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        let alg = &b["AlgorithmSpecification"];
        assert_eq!(
            alg["TrainingImage"],
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:v1"
        );
        assert_eq!(alg["TrainingInputMode"], "File");
        assert_eq!(alg["ContainerEntrypoint"], json!(["python", "train.py"]));
        assert_eq!(alg["ContainerArguments"], json!(["--epochs", "3"]));
        assert_eq!(b["Environment"]["HOIST_RUN_ID"], "abc123def456");
        let tags = b["Tags"].as_array().unwrap();
        assert!(tags.contains(&json!({"Key": "hoist:run-id", "Value": "abc123def456"})));
        assert!(tags.contains(&json!({"Key": "hoist:agent", "Value": "agent-1"})));
        assert!(tags.contains(&json!({"Key": "hoist:queue", "Value": "e/q"})));
        // The run token is in the request, masked in what people see.
        assert_eq!(
            b["Environment"]["HOIST_RUN_TOKEN"],
            "hrt_0123456789abcdef0123"
        );
        assert_eq!(r.masked()["Environment"]["HOIST_RUN_TOKEN"], MASKED);
    }

    #[test]
    fn the_configs_name_image_and_command_are_kept_unless_the_run_has_its_own() {
        let mut c = seed();
        c["TrainingJobName"] = json!("launch-abc123def456");
        c["AlgorithmSpecification"] = json!({
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/other:v2",
            "TrainingInputMode": "FastFile",
            "ContainerEntrypoint": ["python", "main.py"],
            "ContainerArguments": ["--lr", "1"]
        });
        let mut j = job(c);
        j.entry_point = None;
        j.args.clear();
        let r = build(&j, &CX).unwrap();
        assert_eq!(r.name, "launch-abc123def456");
        let alg = &r.body["AlgorithmSpecification"];
        assert_eq!(
            alg["TrainingImage"],
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/other:v2"
        );
        assert_eq!(alg["TrainingInputMode"], "FastFile");
        assert_eq!(alg["ContainerEntrypoint"], json!(["python", "main.py"]));
        assert_eq!(alg["ContainerArguments"], json!(["--lr", "1"]));
    }

    #[test]
    fn a_role_name_gets_the_agents_account() {
        let mut c = seed();
        c["RoleArn"] = json!("service-role/AmazonSageMaker-ExecutionRole");
        assert!(needs_account(&c));
        let r = build(&job(c.clone()), &CX).unwrap();
        assert_eq!(
            r.body["RoleArn"],
            "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole"
        );
        let cn = SpecContext {
            region: "cn-north-1",
            account: None,
        };
        let r = build(&job(c), &cn).unwrap();
        assert_eq!(
            r.body["RoleArn"],
            "arn:aws-cn:iam::ACCOUNT_ID:role/service-role/AmazonSageMaker-ExecutionRole"
        );
        assert!(!needs_account(&seed()));
    }

    #[test]
    fn images_outside_ecr_are_refused_naming_the_registry_setting() {
        let mut j = job(seed());
        j.image = Some("docker.io/library/python:3.12".into());
        let e = build(&j, &CX).unwrap_err();
        assert!(matches!(e, RunnerError::Refused(_)), "{e:?}");
        assert!(e.to_string().contains("registry: {type: ecr"), "{e}");
        j.image = Some("python:3.12".into());
        assert!(build(&j, &CX).is_err());
        for ok in [
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/r:t",
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/a/b@sha256:00",
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/r:t",
        ] {
            assert!(is_ecr_image(ok), "{ok}");
        }
        for bad in [
            "12345.dkr.ecr.us-east-1.amazonaws.com/r",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io/r",
            "ghcr.io/x/y",
        ] {
            assert!(!is_ecr_image(bad), "{bad}");
        }
        // A private registry in the VPC is the config's choice.
        let mut c = seed();
        c["AlgorithmSpecification"] =
            json!({"TrainingImageConfig": {"TrainingRepositoryAccessMode": "Vpc"}});
        j.resource_config = c;
        j.image = Some("registry.internal:5000/train:v1".into());
        assert!(build(&j, &CX).is_ok());
    }

    #[test]
    fn secret_looking_environment_is_refused() {
        let mut j = job(seed());
        j.env.insert("WANDB_API_KEY".into(), "abc".into());
        let e = build(&j, &CX).unwrap_err().to_string();
        assert!(
            e.contains("WANDB_API_KEY looks like a secret") && e.contains("Secrets Manager"),
            "{e}"
        );
        assert!(!e.contains("abc"), "{e}");
        let mut j = job(seed());
        j.env
            .insert("DB".into(), "postgres://u:hunter2@db/x".into());
        let e = build(&j, &CX).unwrap_err().to_string();
        assert!(e.contains("DB") && !e.contains("hunter2"), "{e}");
        let mut c = seed();
        c["Environment"] = json!({"GITHUB_TOKEN": "x"});
        assert!(build(&job(c), &CX).is_err());
    }

    #[test]
    fn the_environment_merges_under_hoists_and_respects_sagemakers_limits() {
        let mut c = seed();
        c["Environment"] = json!({"WANDB_PROJECT": "p", "HOIST_RUN_ID": "mine"});
        let mut j = job(c);
        j.env
            .insert("HOIST_RUN_CONFIG".into(), "x".repeat(MAX_ENV_VALUE + 1));
        let r = build(&j, &CX).unwrap();
        assert_eq!(r.body["Environment"]["WANDB_PROJECT"], "p");
        assert_eq!(r.body["Environment"]["HOIST_RUN_ID"], "abc123def456");
        assert!(r.body["Environment"].get("HOIST_RUN_CONFIG").is_none());
        assert!(r.notes.iter().any(|n| n.contains("HOIST_RUN_CONFIG")));
        let mut j = job(seed());
        j.env.insert("BIG".into(), "x".repeat(MAX_ENV_VALUE + 1));
        let e = build(&j, &CX).unwrap_err().to_string();
        assert!(e.contains("Environment.BIG"), "{e}");
    }

    #[test]
    fn required_members_are_refused_with_an_example() {
        for key in ["ResourceConfig", "StoppingCondition", "RoleArn"] {
            let mut c = seed();
            c.as_object_mut().unwrap().remove(key);
            let e = build(&job(c), &CX).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let mut c = seed();
        c.as_object_mut().unwrap().remove("OutputDataConfig");
        let e = build(&job(c), &CX).unwrap_err().to_string();
        assert!(e.contains("OutputDataConfig.S3OutputPath"), "{e}");
        let mut j = job(seed());
        j.image = None;
        assert!(matches!(
            build(&j, &CX).unwrap_err(),
            RunnerError::Start { .. }
        ));
    }

    #[test]
    fn https_s3_urls_are_rewritten_when_unambiguous() {
        let cases = [
            (
                "https://s3.region-code.amazonaws.com/bucket-name/key-name",
                Some("s3://bucket-name/key-name"),
            ),
            ("https://s3.amazonaws.com/b/k/x", Some("s3://b/k/x")),
            ("https://s3-us-west-2.amazonaws.com/b", Some("s3://b/")),
            (
                "https://s3.dualstack.us-east-1.amazonaws.com/b/k",
                Some("s3://b/k"),
            ),
            (
                "https://my.bucket.s3.us-east-1.amazonaws.com/k",
                Some("s3://my.bucket/k"),
            ),
            ("https://b.s3.amazonaws.com/", Some("s3://b/")),
            (
                "https://b.s3.cn-north-1.amazonaws.com.cn/k",
                Some("s3://b/k"),
            ),
            ("https://s3.amazonaws.com/", None),
            ("https://storage.googleapis.com/b/k", None),
            ("https://b.s3.amazonaws.com/k?versionId=1", None),
            ("http://s3.amazonaws.com/b/k", None),
        ];
        for (url, want) in cases {
            assert_eq!(s3_url_from_https(url).as_deref(), want, "{url}");
        }
        let mut c = seed();
        c["OutputDataConfig"]["S3OutputPath"] = json!("https://example.com/b/k");
        let e = build(&job(c), &CX).unwrap_err().to_string();
        assert!(e.contains("s3://BUCKET/PREFIX"), "{e}");
    }

    #[test]
    fn tags_replace_hoists_keys_and_keep_the_configs() {
        let mut c = seed();
        c["Tags"] =
            json!([{"Key": "team", "Value": "ml"}, {"Key": "hoist:run-id", "Value": "spoof"}]);
        let mut j = job(c);
        j.queue = "e/q#1 (gpu)".into();
        let r = build(&j, &CX).unwrap();
        let tags = r.body["Tags"].as_array().unwrap();
        assert_eq!(tags.len(), 4);
        assert!(tags.contains(&json!({"Key": "team", "Value": "ml"})));
        assert!(tags.contains(&json!({"Key": "hoist:run-id", "Value": "abc123def456"})));
        assert!(tags.contains(&json!({"Key": "hoist:queue", "Value": "e/q_1 _gpu_"})));
    }

    #[test]
    fn job_names() {
        let mut j = job(seed());
        j.run_id = "Run_ID".into();
        assert_eq!(job_name(&j).unwrap(), "hoist-run-id");
        j.run_id = "x".repeat(80);
        assert_eq!(job_name(&j).unwrap().len(), 63);
        j.resource_config["TrainingJobName"] = json!("-bad");
        assert!(job_name(&j).is_err());
        assert!(valid_job_name("a-b--c1"));
        assert!(!valid_job_name("a_b"));
        assert_eq!(
            instance_count(&json!({"ResourceConfig": {"InstanceCount": 3}})),
            3
        );
        assert_eq!(
            instance_count(
                &json!({"ResourceConfig": {"InstanceGroups": [{"InstanceCount": 2}, {"InstanceCount": 1}]}})
            ),
            3
        );
    }
}
