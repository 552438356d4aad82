//! The `sagemaker` queue config: a partial SageMaker `CreateTrainingJob` request, with
//! the PascalCase keys of the AWS API reference.
//!
//! `RoleArn`, `ResourceConfig` and `StoppingCondition` are required (the agent guesses
//! neither the role, nor the instances, nor a time limit; `RoleArn` may be a role name
//! of the agent's account);
//! everything else is optional: the agent sets `TrainingJobName` and
//! `AlgorithmSpecification.TrainingImage` for each run, but a queue may set them too.
//! Inside the objects that are present, the API's own required members are required
//! (`ResourceConfig.VolumeSizeInGB`, `OutputDataConfig.S3OutputPath`, …).
//! Formats are the API's: ARNs, `ml.*` instance types, `s3://` or `https://` S3 URLs,
//! the training job name pattern, the numeric ranges.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::ConfigProblem;
use super::schema::{Checker, Field, Got, KeyStyle, get, has_macro, quote};

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static ROLE_ARN: LazyLock<Regex> =
    LazyLock::new(|| re(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$"));
/// A role name, with an optional path (`SageMakerRole`,
/// `service-role/AmazonSageMaker-ExecutionRole`): the agent expands it with its own
/// account (STS `GetCallerIdentity`).
static ROLE_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^([\w+=,.@\-]+/)*[\w+=,.@\-]{1,64}$"));
static INSTANCE_TYPE: LazyLock<Regex> = LazyLock::new(|| re(r"^ml\.[a-z0-9\-]+\.[a-z0-9]+$"));
static S3_URL: LazyLock<Regex> = LazyLock::new(|| re(r"^(https|s3)://([^/]+)/?(.*)$"));
static JOB_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"));
static CHANNEL_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9\.\-_]+$"));
static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z_][a-zA-Z0-9_]*$"));
static SECURITY_GROUP: LazyLock<Regex> = LazyLock::new(|| re(r"^[-0-9a-zA-Z]+$"));

const FIELDS: &[&str] = &[
    "AlgorithmSpecification",
    "CheckpointConfig",
    "DebugHookConfig",
    "DebugRuleConfigurations",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "EnableNetworkIsolation",
    "Environment",
    "ExperimentConfig",
    "HyperParameters",
    "InfraCheckConfig",
    "InputDataConfig",
    "OutputDataConfig",
    "ProfilerConfig",
    "ProfilerRuleConfigurations",
    "RemoteDebugConfig",
    "ResourceConfig",
    "RetryStrategy",
    "RoleArn",
    "SessionChainingConfig",
    "StoppingCondition",
    "Tags",
    "TensorBoardOutputConfig",
    "TrainingJobName",
    "VpcConfig",
];

/// Checks a `sagemaker` queue config; returns every problem.
pub fn validate(config: &Value) -> Vec<ConfigProblem> {
    let mut c = Checker::new();
    let Some(obj) = c.object(config, "") else {
        return c.problems;
    };
    let fields = c.fields(obj, "", FIELDS, KeyStyle::Exact);
    c.require(
        &fields,
        "",
        &["RoleArn", "ResourceConfig", "StoppingCondition"],
    );
    // Spot training is off unless set (a macro may turn it on).
    let spot =
        get(&fields, "EnableManagedSpotTraining").is_some_and(|f| *f.value != Value::Bool(false));
    for f in &fields {
        let p = f.path.as_str();
        match f.name {
            "RoleArn" => {
                c.formatted(f.value, p, |s| {
                    let arn = (20..=2048).contains(&s.len()) && ROLE_ARN.is_match(s);
                    let name = !s.starts_with("arn:") && s.len() <= 512 && ROLE_NAME.is_match(s);
                    if arn || name {
                        Ok(())
                    } else {
                        Err(format!(
                            "expected an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole, or a role name of the agent's account such as SageMakerRole, found {}",
                            quote(s)
                        ))
                    }
                });
            }
            "TrainingJobName" => {
                c.matching(
                    f.value,
                    p,
                    &JOB_NAME,
                    "a training job name: 1 to 63 letters, digits and `-`, starting and ending with a letter or digit",
                );
            }
            "ResourceConfig" => resource_config(&mut c, f),
            "OutputDataConfig" => {
                object_with(
                    &mut c,
                    f,
                    &["S3OutputPath", "KmsKeyId", "CompressionType"],
                    &["S3OutputPath"],
                    |c, g| match g.name {
                        "S3OutputPath" => s3_url(c, g),
                        "CompressionType" => {
                            c.enumerated(g.value, &g.path, &["GZIP", "NONE"]);
                        }
                        _ => string_max(c, g, 2048),
                    },
                );
            }
            "StoppingCondition" => stopping_condition(&mut c, f, spot),
            "AlgorithmSpecification" => algorithm_specification(&mut c, f),
            "HyperParameters" => string_map(&mut c, f, 100, 256, 2500, None),
            "Environment" => string_map(&mut c, f, 100, 512, 512, Some(&ENV_NAME)),
            "InputDataConfig" => input_data_config(&mut c, f),
            "VpcConfig" => {
                object_with(
                    &mut c,
                    f,
                    &["SecurityGroupIds", "Subnets"],
                    &["SecurityGroupIds", "Subnets"],
                    |c, g| {
                        let (max, what) = if g.name == "Subnets" {
                            (16, "subnet")
                        } else {
                            (5, "security group")
                        };
                        bounded_list(c, g, 1, max, |c, v, p| {
                            c.matching(
                                v,
                                p,
                                &SECURITY_GROUP,
                                &format!("a {what} id (letters, digits and `-`)"),
                            );
                        });
                    },
                );
            }
            "Tags" => bounded_list(&mut c, f, 0, 50, |c, v, p| {
                let Some(m) = c.object(v, p) else { return };
                let fs = c.fields(m, p, &["Key", "Value"], KeyStyle::Exact);
                c.require(&fs, p, &["Key", "Value"]);
                for g in &fs {
                    if g.name == "Key" {
                        if let Some(s) = c.nonempty(g.value, &g.path) {
                            check_len(c, g, s, 128);
                        }
                    } else {
                        string_max(c, g, 256);
                    }
                }
            }),
            "EnableInterContainerTrafficEncryption"
            | "EnableManagedSpotTraining"
            | "EnableNetworkIsolation" => {
                c.bool(f.value, p);
            }
            "CheckpointConfig" => {
                object_with(&mut c, f, &["S3Uri", "LocalPath"], &["S3Uri"], |c, g| {
                    if g.name == "S3Uri" {
                        s3_url(c, g);
                    } else {
                        string_max(c, g, 4096);
                    }
                });
            }
            "RetryStrategy" => {
                object_with(
                    &mut c,
                    f,
                    &["MaximumRetryAttempts"],
                    &["MaximumRetryAttempts"],
                    |c, g| {
                        c.int(g.value, &g.path, 1, 30);
                    },
                );
            }
            "DebugHookConfig" => {
                object_with(
                    &mut c,
                    f,
                    &[
                        "LocalPath",
                        "S3OutputPath",
                        "HookParameters",
                        "CollectionConfigurations",
                    ],
                    &["S3OutputPath"],
                    |c, g| match g.name {
                        "S3OutputPath" => s3_url(c, g),
                        "HookParameters" => string_map(c, g, 20, 256, 256, None),
                        "CollectionConfigurations" => c.object_list_shape(g.value, &g.path),
                        _ => string_max(c, g, 4096),
                    },
                );
            }
            "ProfilerConfig" => {
                object_with(
                    &mut c,
                    f,
                    &[
                        "S3OutputPath",
                        "ProfilingIntervalInMilliseconds",
                        "ProfilingParameters",
                        "DisableProfiler",
                    ],
                    &[],
                    |c, g| match g.name {
                        "S3OutputPath" => s3_url(c, g),
                        "ProfilingIntervalInMilliseconds" => {
                            c.int(g.value, &g.path, 1, i64::MAX);
                        }
                        "ProfilingParameters" => string_map(c, g, 20, 256, 256, None),
                        _ => {
                            c.bool(g.value, &g.path);
                        }
                    },
                );
            }
            "TensorBoardOutputConfig" => {
                object_with(
                    &mut c,
                    f,
                    &["LocalPath", "S3OutputPath"],
                    &["S3OutputPath"],
                    |c, g| {
                        if g.name == "S3OutputPath" {
                            s3_url(c, g);
                        } else {
                            string_max(c, g, 4096);
                        }
                    },
                );
            }
            "RemoteDebugConfig" => bool_object(&mut c, f, "EnableRemoteDebug"),
            "InfraCheckConfig" => bool_object(&mut c, f, "EnableInfraCheck"),
            "SessionChainingConfig" => bool_object(&mut c, f, "EnableSessionTagChaining"),
            "ExperimentConfig" => {
                object_with(
                    &mut c,
                    f,
                    &[
                        "ExperimentName",
                        "RunName",
                        "TrialComponentDisplayName",
                        "TrialName",
                    ],
                    &[],
                    |c, g| string_max(c, g, 120),
                );
            }
            "DebugRuleConfigurations" | "ProfilerRuleConfigurations" => {
                bounded_list(&mut c, f, 0, 20, |c, v, p| {
                    c.object(v, p);
                });
            }
            _ => {}
        }
    }
    super::schema::sort_problems(config, &mut c.problems);
    c.problems
}

/// Checks an object member: its known fields (`known`), the required ones, and each
/// field with `each`.
fn object_with<'v>(
    c: &mut Checker,
    f: &Field<'v>,
    known: &[&'static str],
    required: &[&str],
    mut each: impl FnMut(&mut Checker, &Field<'v>),
) -> Option<Vec<Field<'v>>> {
    let obj: &'v Map<String, Value> = c.object(f.value, &f.path)?;
    let fields = c.fields(obj, &f.path, known, KeyStyle::Exact);
    c.require(&fields, &f.path, required);
    for g in &fields {
        each(c, g);
    }
    Some(fields)
}

fn bool_object(c: &mut Checker, f: &Field<'_>, name: &'static str) {
    object_with(c, f, &[name], &[], |c, g| {
        c.bool(g.value, &g.path);
    });
}

fn check_len(c: &mut Checker, f: &Field<'_>, s: &str, max: usize) {
    if s.chars().count() > max && !has_macro(s) {
        c.report(
            &f.path,
            format!(
                "must be at most {max} characters, found {}",
                s.chars().count()
            ),
        );
    }
}

fn string_max(c: &mut Checker, f: &Field<'_>, max: usize) {
    if let Some(s) = c.string(f.value, &f.path) {
        check_len(c, f, s, max);
    }
}

fn s3_url(c: &mut Checker, f: &Field<'_>) {
    c.formatted(f.value, &f.path, |s| {
        if S3_URL.is_match(s) && s.len() <= 1024 {
            Ok(())
        } else {
            Err(format!(
                "expected an S3 URL such as s3://bucket/prefix or https://s3.us-east-1.amazonaws.com/bucket/prefix, found {}",
                quote(s)
            ))
        }
    });
}

fn bounded_list<'v>(
    c: &mut Checker,
    f: &Field<'v>,
    min: usize,
    max: usize,
    mut each: impl FnMut(&mut Checker, &'v Value, &str),
) {
    let Some(items) = c.list(f.value, &f.path) else {
        return;
    };
    if items.len() < min {
        c.report(
            &f.path,
            format!("must have at least {min} item(s), found {}", items.len()),
        );
    } else if items.len() > max {
        c.report(
            &f.path,
            format!("must have at most {max} items, found {}", items.len()),
        );
    }
    for (i, item) in items.iter().enumerate() {
        each(c, item, &super::path::index_path(&f.path, i));
    }
}

/// A string → string map (`HyperParameters`, `Environment`): the API takes strings
/// only, so `epochs: 10` must be written `epochs: "10"`.
fn string_map(
    c: &mut Checker,
    f: &Field<'_>,
    max_entries: usize,
    max_key: usize,
    max_value: usize,
    key_re: Option<&Regex>,
) {
    let Some(m) = c.object(f.value, &f.path) else {
        return;
    };
    if m.len() > max_entries {
        c.report(
            &f.path,
            format!("must have at most {max_entries} entries, found {}", m.len()),
        );
    }
    for (k, v) in m {
        let p = super::path::key_path(&f.path, k);
        if k.chars().count() > max_key {
            c.report(&p, format!("key must be at most {max_key} characters"));
        } else if let Some(re) = key_re
            && !re.is_match(k)
            && !has_macro(k)
        {
            c.report(
                &p,
                format!(
                    "invalid name {}: expected letters, digits and `_`, not starting with a digit",
                    quote(k)
                ),
            );
        }
        match v {
            Value::String(s) => {
                if s.chars().count() > max_value && !has_macro(s) {
                    c.report(
                        &p,
                        format!(
                            "must be at most {max_value} characters, found {}",
                            s.chars().count()
                        ),
                    );
                }
            }
            Value::Number(_) | Value::Bool(_) => {
                c.report(
                    &p,
                    format!(
                        "expected string, found {}; the API takes strings only: write {}",
                        super::schema::kind_of(v),
                        quote(&v.to_string())
                    ),
                );
            }
            other => c.type_error(&p, "string", other),
        }
    }
}

const RESOURCE_CONFIG_FIELDS: &[&str] = &[
    "InstanceType",
    "InstanceCount",
    "VolumeSizeInGB",
    "VolumeKmsKeyId",
    "KeepAlivePeriodInSeconds",
    "InstanceGroups",
    "TrainingPlanArn",
    "InstancePlacementConfig",
];

fn instance_type(c: &mut Checker, f: &Field<'_>) {
    c.matching(
        f.value,
        &f.path,
        &INSTANCE_TYPE,
        "an instance type such as ml.m5.xlarge",
    );
}

fn resource_config(c: &mut Checker, f: &Field<'_>) {
    let Some(fields) = object_with(c, f, RESOURCE_CONFIG_FIELDS, &["VolumeSizeInGB"], |c, g| {
        let p = g.path.as_str();
        match g.name {
            "InstanceType" => instance_type(c, g),
            "InstanceCount" => {
                c.int(g.value, p, 1, i64::MAX);
            }
            "VolumeSizeInGB" => {
                c.int(g.value, p, 1, i64::MAX);
            }
            "KeepAlivePeriodInSeconds" => {
                c.int(g.value, p, 0, 3600);
            }
            "VolumeKmsKeyId" | "TrainingPlanArn" => string_max(c, g, 2048),
            "InstancePlacementConfig" => {
                c.object(g.value, p);
            }
            _ => bounded_list(c, g, 1, 5, |c, v, ip| {
                let Some(m) = c.object(v, ip) else { return };
                let fs = c.fields(
                    m,
                    ip,
                    &["InstanceType", "InstanceCount", "InstanceGroupName"],
                    KeyStyle::Exact,
                );
                c.require(
                    &fs,
                    ip,
                    &["InstanceType", "InstanceCount", "InstanceGroupName"],
                );
                for h in &fs {
                    match h.name {
                        "InstanceType" => instance_type(c, h),
                        "InstanceCount" => {
                            c.int(h.value, &h.path, 0, i64::MAX);
                        }
                        _ => {
                            c.matching(
                                h.value,
                                &h.path,
                                &CHANNEL_NAME,
                                "an instance group name (letters, digits, `.`, `-`, `_`)",
                            );
                        }
                    }
                }
            }),
        }
    }) else {
        return;
    };
    let has = |n: &str| get(&fields, n).is_some();
    if has("InstanceGroups") {
        for n in ["InstanceType", "InstanceCount"] {
            if let Some(g) = get(&fields, n) {
                c.report(&g.path, "cannot be set together with `InstanceGroups`");
            }
        }
    } else {
        if !has("InstanceType") {
            c.report(
                &f.path,
                "missing required field `InstanceType` (or `InstanceGroups`)",
            );
        }
        if !has("InstanceCount") {
            c.report(
                &f.path,
                "missing required field `InstanceCount` (or `InstanceGroups`)",
            );
        }
    }
}

fn stopping_condition(c: &mut Checker, f: &Field<'_>, spot: bool) {
    let mut runtime = None;
    let mut wait = None;
    let Some(fields) = object_with(
        c,
        f,
        &[
            "MaxRuntimeInSeconds",
            "MaxWaitTimeInSeconds",
            "MaxPendingTimeInSeconds",
        ],
        &[],
        |c, g| match g.name {
            "MaxRuntimeInSeconds" => runtime = c.int(g.value, &g.path, 1, i64::MAX).ok(),
            "MaxWaitTimeInSeconds" => wait = c.int(g.value, &g.path, 1, i64::MAX).ok(),
            _ => {
                c.int(g.value, &g.path, 7200, 2_419_200);
            }
        },
    ) else {
        return;
    };
    if let Some(w) = get(&fields, "MaxWaitTimeInSeconds") {
        if !spot {
            c.report(
                &w.path,
                "only allowed with `EnableManagedSpotTraining: true`",
            );
        }
        if let (Some(r), Some(wv)) = (runtime, wait)
            && wv < r
        {
            c.report(
                &w.path,
                format!("must be at least MaxRuntimeInSeconds ({r}), found {wv}"),
            );
        }
    }
}

const ALGORITHM_FIELDS: &[&str] = &[
    "TrainingImage",
    "AlgorithmName",
    "TrainingInputMode",
    "MetricDefinitions",
    "EnableSageMakerMetricsTimeSeries",
    "ContainerEntrypoint",
    "ContainerArguments",
    "TrainingImageConfig",
];

fn algorithm_specification(c: &mut Checker, f: &Field<'_>) {
    let Some(fields) = object_with(c, f, ALGORITHM_FIELDS, &[], |c, g| {
        let p = g.path.as_str();
        match g.name {
            "TrainingImage" => {
                if let Some(s) = c.nonempty(g.value, p) {
                    check_len(c, g, s, 255);
                }
            }
            "AlgorithmName" => {
                if let Some(s) = c.nonempty(g.value, p) {
                    check_len(c, g, s, 170);
                }
            }
            "TrainingInputMode" => {
                c.enumerated(g.value, p, &["File", "Pipe", "FastFile"]);
            }
            "EnableSageMakerMetricsTimeSeries" => {
                c.bool(g.value, p);
            }
            "ContainerEntrypoint" | "ContainerArguments" => {
                bounded_list(c, g, 1, 100, |c, v, ip| {
                    if let Some(s) = c.string(v, ip)
                        && s.chars().count() > 256
                        && !has_macro(s)
                    {
                        c.report(ip, "must be at most 256 characters");
                    }
                });
            }
            "MetricDefinitions" => bounded_list(c, g, 0, 40, |c, v, ip| {
                let Some(m) = c.object(v, ip) else { return };
                let fs = c.fields(m, ip, &["Name", "Regex"], KeyStyle::Exact);
                c.require(&fs, ip, &["Name", "Regex"]);
                for h in &fs {
                    if let Some(s) = c.nonempty(h.value, &h.path) {
                        check_len(c, h, s, if h.name == "Name" { 255 } else { 500 });
                    }
                }
            }),
            _ => {
                let Some(m) = c.object(g.value, p) else {
                    return;
                };
                for h in c.fields(
                    m,
                    p,
                    &[
                        "TrainingRepositoryAccessMode",
                        "TrainingRepositoryAuthConfig",
                    ],
                    KeyStyle::Exact,
                ) {
                    if h.name == "TrainingRepositoryAccessMode" {
                        c.enumerated(h.value, &h.path, &["Platform", "Vpc"]);
                    } else if let Some(o) = c.object(h.value, &h.path) {
                        let fs = c.fields(
                            o,
                            &h.path,
                            &["TrainingRepositoryCredentialsProviderArn"],
                            KeyStyle::Exact,
                        );
                        c.require(&fs, &h.path, &["TrainingRepositoryCredentialsProviderArn"]);
                        for k in &fs {
                            string_max(c, k, 2048);
                        }
                    }
                }
            }
        }
    }) else {
        return;
    };
    c.at_most_one(&fields, &f.path, &["TrainingImage", "AlgorithmName"]);
}

const CHANNEL_FIELDS: &[&str] = &[
    "ChannelName",
    "DataSource",
    "ContentType",
    "CompressionType",
    "RecordWrapperType",
    "InputMode",
    "ShuffleConfig",
];

fn input_data_config(c: &mut Checker, f: &Field<'_>) {
    bounded_list(c, f, 1, 20, |c, v, p| {
        let Some(m) = c.object(v, p) else { return };
        let fields = c.fields(m, p, CHANNEL_FIELDS, KeyStyle::Exact);
        c.require(&fields, p, &["ChannelName", "DataSource"]);
        for g in &fields {
            let gp = g.path.as_str();
            match g.name {
                "ChannelName" => {
                    if let Got::Val(s) = c.matching(
                        g.value,
                        gp,
                        &CHANNEL_NAME,
                        "a channel name (letters, digits, `.`, `-`, `_`)",
                    ) {
                        check_len(c, g, s, 64);
                    }
                }
                "ContentType" => string_max(c, g, 256),
                "CompressionType" => {
                    c.enumerated(g.value, gp, &["None", "Gzip"]);
                }
                "RecordWrapperType" => {
                    c.enumerated(g.value, gp, &["None", "RecordIO"]);
                }
                "InputMode" => {
                    c.enumerated(g.value, gp, &["Pipe", "File", "FastFile"]);
                }
                "ShuffleConfig" => {
                    object_with(c, g, &["Seed"], &["Seed"], |c, h| {
                        c.int(h.value, &h.path, i64::MIN, i64::MAX);
                    });
                }
                _ => data_source(c, g),
            }
        }
    });
}

fn data_source(c: &mut Checker, f: &Field<'_>) {
    let Some(fields) = object_with(
        c,
        f,
        &["S3DataSource", "FileSystemDataSource"],
        &[],
        |c, g| {
            if g.name == "S3DataSource" {
                object_with(
                    c,
                    g,
                    &[
                        "S3DataType",
                        "S3Uri",
                        "S3DataDistributionType",
                        "AttributeNames",
                        "InstanceGroupNames",
                        "ModelAccessConfig",
                        "HubAccessConfig",
                    ],
                    &["S3DataType", "S3Uri"],
                    |c, h| match h.name {
                        "S3DataType" => {
                            c.enumerated(
                                h.value,
                                &h.path,
                                &[
                                    "ManifestFile",
                                    "S3Prefix",
                                    "AugmentedManifestFile",
                                    "Converse",
                                ],
                            );
                        }
                        "S3Uri" => s3_url(c, h),
                        "S3DataDistributionType" => {
                            c.enumerated(h.value, &h.path, &["FullyReplicated", "ShardedByS3Key"]);
                        }
                        "AttributeNames" | "InstanceGroupNames" => {
                            c.string_list(h.value, &h.path);
                        }
                        _ => {
                            c.object(h.value, &h.path);
                        }
                    },
                );
            } else {
                object_with(
                    c,
                    g,
                    &[
                        "FileSystemId",
                        "FileSystemAccessMode",
                        "FileSystemType",
                        "DirectoryPath",
                    ],
                    &[
                        "FileSystemId",
                        "FileSystemAccessMode",
                        "FileSystemType",
                        "DirectoryPath",
                    ],
                    |c, h| match h.name {
                        "FileSystemAccessMode" => {
                            c.enumerated(h.value, &h.path, &["rw", "ro"]);
                        }
                        "FileSystemType" => {
                            c.enumerated(h.value, &h.path, &["EFS", "FSxLustre"]);
                        }
                        _ => {
                            c.nonempty(h.value, &h.path);
                        }
                    },
                );
            }
        },
    ) else {
        return;
    };
    if fields.is_empty() && f.value.as_object().is_some_and(Map::is_empty) {
        c.report(
            &f.path,
            "expected one of `S3DataSource`, `FileSystemDataSource`",
        );
    }
    c.at_most_one(&fields, &f.path, &["S3DataSource", "FileSystemDataSource"]);
}
