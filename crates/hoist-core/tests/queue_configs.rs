//! Queue-config schema checks: every fixture in `fixtures/queue-configs/` (the seed
//! documents' examples with their placeholders filled, and other realistic configs) is
//! accepted; a table of bad configs gives the exact problem lists.
//!
//! Fixture files are named `<resource>.<name>.<yaml|json>`.

use std::path::Path;

use hoist_core::resource::{ResourceType, validate_config};
use hoist_core::yaml::parse_document;

fn fixtures_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/queue-configs")
}

#[test]
fn every_fixture_is_accepted() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures dir") {
        let path = entry.expect("dir entry").path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let resource: ResourceType = file
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let config = parse_document(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Err(problems) = validate_config(resource, &config) {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            panic!("{file} refused:\n{}", lines.join("\n"));
        }
        seen.push((resource, file));
    }
    // Every resource has fixtures, and the seed examples are among them.
    for r in ResourceType::ALL {
        assert!(seen.iter().any(|(s, _)| *s == r), "no fixture for {r}");
    }
    for name in [
        "sagemaker.000-set-up-launch.json",
        "kubernetes.000-set-up-launch.yaml",
        "kubernetes.002-kaniko-config.yaml",
        "kubernetes.004-deployment.yaml",
        "vertex.003-launch-on-vertex.yaml",
    ] {
        assert!(
            seen.iter().any(|(_, f)| f == name),
            "missing fixture {name}"
        );
    }
}

#[test]
fn seed_placeholders_unfilled_are_refused() {
    // The seed's SageMaker example as written, before its <placeholder> is filled.
    check(
        ResourceType::Sagemaker,
        r#"{"RoleArn": "<arn:partition:service:region:account:resource>",
            "ResourceConfig": {"InstanceType": "ml.m4.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 2},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600}}"#,
        &[
            r#"RoleArn: expected an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole, or a role name of the agent's account such as SageMakerRole, found "<arn:partition:service:region:account:resource>""#,
        ],
    );
}

/// Checks `input` (YAML or JSON) against `resource`'s schema; `expected` is the exact
/// list of problems as displayed (`path: message`), in order.
#[track_caller]
fn check(resource: ResourceType, input: &str, expected: &[&str]) {
    let config = parse_document(input).unwrap_or_else(|e| panic!("bad test input: {e}\n{input}"));
    let got: Vec<String> = match validate_config(resource, &config) {
        Ok(()) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    };
    if got != expected {
        panic!(
            "{resource} config:\n{input}\nexpected problems:\n  {}\ngot:\n  {}\n",
            expected.join("\n  "),
            got.join("\n  ")
        );
    }
}

use ResourceType::{Docker, Kubernetes, LocalProcess, Sagemaker, Vertex};

#[test]
fn bad_kubernetes_configs() {
    let table: &[(&str, &[&str])] = &[
        ("[1, 2]", &["(document): expected object, found list"]),
        (
            r#"
spec:
  template:
    spec:
      containers:
        - name: train
          image: 5
"#,
            &["spec.template.spec.containers[0].image: expected string, found number"],
        ),
        (
            r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: Train_Job
  labels:
    app.kubernetes.io/name: launch
    version: 1
    bad key: x
    tier: "-x"
spec:
  backoffLimit: -1
  parallelism: "2"
  completionMode: indexed
  template:
    spec:
      restartPolicy: Always
      containers:
        - name: train
          imagee: x
          imagePullPolicy: sometimes
          command: python train.py
          env:
            - name: A
              value: 1
            - value: x
            - name: B
              value: x
              valueFrom:
                secretKeyRef: {name: s, key: k}
          resources:
            limits:
              cpu: 2 cores
              memory: 4GB
              gpu: 1
              nvidia.com/gpu: 0.5
            requests:
              cpu: "4"
              memory: 1Gi
        - name: train
      foo: bar
"#,
            &[
                r#"metadata.name: invalid name "Train_Job": expected a DNS subdomain (at most 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit)"#,
                "metadata.labels.version: expected string, found number",
                r#"metadata.labels["bad key"]: invalid key "bad key": the name must be 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"#,
                r#"metadata.labels.tier: invalid label value "-x": expected at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"#,
                "spec.backoffLimit: must be at least 0, found -1",
                r#"spec.parallelism: expected integer, found string "2"; write it without quotes"#,
                r#"spec.completionMode: unknown value "indexed"; did you mean `Indexed`?"#,
                "spec.template.spec.restartPolicy: a Job's pods cannot use restartPolicy `Always`; expected `Never` or `OnFailure`",
                "spec.template.spec.containers[0].imagee: unknown field `imagee`; did you mean `image`?",
                r#"spec.template.spec.containers[0].imagePullPolicy: expected one of `Always`, `IfNotPresent`, `Never`, found "sometimes""#,
                "spec.template.spec.containers[0].command: expected list, found string",
                "spec.template.spec.containers[0].env[0].value: expected string, found number",
                "spec.template.spec.containers[0].env[1]: missing required field `name`",
                "spec.template.spec.containers[0].env[2]: only one of `value`, `valueFrom` may be set",
                r#"spec.template.spec.containers[0].resources.limits.cpu: invalid quantity "2 cores"; expected a Kubernetes quantity: a number with an optional suffix m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei, e.g. 500m, 2Gi or 1.5"#,
                r#"spec.template.spec.containers[0].resources.limits.memory: invalid quantity "4GB"; expected a Kubernetes quantity: a number with an optional suffix m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei, e.g. 500m, 2Gi or 1.5 (no trailing `B`: write 2Gi, not 2GiB or 2GB)"#,
                "spec.template.spec.containers[0].resources.limits.gpu: unknown resource `gpu`; did you mean `nvidia.com/gpu`?",
                r#"spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"]: `nvidia.com/gpu` must be a whole number, found 0.5"#,
                r#"spec.template.spec.containers[1].name: duplicate container name "train" (also at spec.template.spec.containers[0].name)"#,
                "spec.template.spec.foo: unknown field `foo`; expected one of `activeDeadlineSeconds`, `affinity`, `automountServiceAccountToken`, `containers`, `dnsConfig`, `dnsPolicy`, `enableServiceLinks`, `ephemeralContainers`, `hostAliases`, `hostIPC`, `hostNetwork`, `hostPID`, `hostUsers`, `hostname`, `hostnameOverride`, `imagePullSecrets`, `initContainers`, `nodeName`, `nodeSelector`, `os`, `overhead`, `preemptionPolicy`, `priority`, `priorityClassName`, `readinessGates`, `resourceClaims`, `resources`, `restartPolicy`, `runtimeClassName`, `schedulerName`, `schedulingGates`, `securityContext`, `serviceAccount`, `serviceAccountName`, `setHostnameAsFQDN`, `shareProcessNamespace`, `subdomain`, `terminationGracePeriodSeconds`, `tolerations`, `topologySpreadConstraints`, `volumes`",
            ],
        ),
        (
            r#"
spec:
  template:
    spec:
      containers:
        - resources:
            requests: {cpu: "2", nvidia.com/gpu: 1}
            limits: {cpu: 1, nvidia.com/gpu: 2}
"#,
            &[
                "spec.template.spec.containers[0].resources.requests.cpu: the request for `cpu` is above its limit",
                r#"spec.template.spec.containers[0].resources.requests["nvidia.com/gpu"]: the request for `nvidia.com/gpu` must equal its limit"#,
            ],
        ),
        (
            r#"
spec:
  template:
    spec:
      hostNetwork: "true"
      nodeSelector: {pool: 3}
      tolerations:
        - key: gpu
          operator: Exists
          value: yes
        - effect: NoSchedule
          tolerationSeconds: 10
      volumes:
        - name: a
        - name: b
          emptyDir: {}
          hostPath: {path: /data}
        - name: b
          hostPath: {type: Dir}
      initContainers:
        - name: init
          restartPolicy: OnFailure
      containers:
        - name: main
          restartPolicy: Always
          ports:
            - containerPort: 70000
              protocol: tcp
          volumeMounts:
            - name: a
          securityContext:
            privileged: yes
            seccompProfile: {}
"#,
            &[
                r#"spec.template.spec.hostNetwork: expected boolean, found string "true"; write it without quotes"#,
                "spec.template.spec.nodeSelector.pool: expected string, found number",
                "spec.template.spec.tolerations[0].value: must be empty when operator is `Exists`",
                "spec.template.spec.tolerations[1]: a toleration without `key` must have operator `Exists`",
                "spec.template.spec.tolerations[1].tolerationSeconds: only allowed with effect `NoExecute`",
                "spec.template.spec.volumes[0]: missing volume source, such as `emptyDir`, `configMap`, `secret`, `persistentVolumeClaim` or `hostPath`",
                "spec.template.spec.volumes[1]: only one volume source may be set, found `emptyDir`, `hostPath`",
                "spec.template.spec.volumes[2].name: duplicate volume name \"b\" (also at spec.template.spec.volumes[1].name)",
                "spec.template.spec.volumes[2].hostPath: missing required field `path`",
                r#"spec.template.spec.volumes[2].hostPath.type: expected one of "", `DirectoryOrCreate`, `Directory`, `FileOrCreate`, `File`, `Socket`, `CharDevice`, `BlockDevice`, found "Dir""#,
                r#"spec.template.spec.initContainers[0].restartPolicy: expected one of `Always`, found "OnFailure""#,
                "spec.template.spec.containers[0].restartPolicy: only init containers may set restartPolicy (`Always`, for a sidecar)",
                "spec.template.spec.containers[0].ports[0].containerPort: must be at most 65535, found 70000",
                r#"spec.template.spec.containers[0].ports[0].protocol: unknown value "tcp"; did you mean `TCP`?"#,
                "spec.template.spec.containers[0].volumeMounts[0]: missing required field `mountPath`",
                "spec.template.spec.containers[0].securityContext.privileged: expected boolean, found string",
                "spec.template.spec.containers[0].securityContext.seccompProfile: missing required field `type`",
            ],
        ),
        (
            // Macros stand where strings, numbers and enums are expected.
            r#"
metadata:
  name: launch-${run_id}
  namespace: ${NAMESPACE}
spec:
  backoffLimit: "${RETRIES}"
  parallelism: "${N} workers"
  template:
    spec:
      restartPolicy: ${POLICY}
      containers:
        - image: ${image_uri}
          resources:
            limits: {memory: "${MEM}Gi", nvidia.com/gpu: "${GPUS}"}
"#,
            &["spec.parallelism: expected integer, found string"],
        ),
        (
            // null counts as absent, as for the API server.
            "metadata:\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          image:\n",
            &[],
        ),
        (
            r#"
apiVersion: batch/v1beta1
kind: Job
status: {active: 1}
metadata: {creationTimestamp: "2024-01-01T00:00:00Z", uid: x}
"#,
            &[
                r#"apiVersion: a Job is served as batch/v1, not "batch/v1beta1""#,
                "status: `status` is written by Kubernetes; remove it",
                "metadata.creationTimestamp: `creationTimestamp` is set by Kubernetes; remove it",
                "metadata.uid: unknown field `uid`; expected one of `name`, `generateName`, `namespace`, `labels`, `annotations`, `finalizers`, `ownerReferences`, `creationTimestamp`",
            ],
        ),
        (
            "apiVersion: v1\nkind: Job\nspec: {template: {spec: {containers: [{name: a}]}}}\n",
            &[r#"apiVersion: a Job is served as batch/v1, not "v1""#],
        ),
        // Of batch/v1 only a Job runs to an end; a typo gets a hint.
        (
            "apiVersion: batch/v1\nkind: CronJob\nspec: {schedule: '@daily', whatever: 1}\n",
            &[
                "kind: batch/v1 has no runnable kind `CronJob`: a run is a batch/v1 `Job`, or an object of a custom resource (its own apiVersion, e.g. kubeflow.org/v1 PyTorchJob)",
            ],
        ),
        (
            "apiVersion: batch/v1\nkind: Jbo\nspec: {}\n",
            &[
                "kind: batch/v1 has no runnable kind `Jbo` (did you mean `Job`?): a run is a batch/v1 `Job`, or an object of a custom resource (its own apiVersion, e.g. kubeflow.org/v1 PyTorchJob)",
            ],
        ),
        // Any other kind is a custom object, checked only for its shape.
        (
            "apiVersion: example.com/v1\nkind: Trainer\nspec: {whatever: 1}\n",
            &[],
        ),
        (
            "kind: Deployment\nmetadata: []\nspec: 1\n",
            &[
                "(document): missing required field `apiVersion` (required for an object other than a batch/v1 Job)",
                "metadata: expected object, found list",
                "spec: expected object, found number",
            ],
        ),
        (
            "apiVersion: not a version\nkind: 3\n",
            &[
                r#"apiVersion: expected an apiVersion like v1, batch/v1 or example.com/v1alpha1, found "not a version""#,
                "kind: expected string, found number",
            ],
        ),
    ];
    for (input, expected) in table {
        check(Kubernetes, input, expected);
    }
}

/// `RoleArn` may be a role name (with a path): the agent expands it with its account.
#[test]
fn sagemaker_role_names_are_accepted() {
    let base = r#""ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600}"#;
    for role in [
        "SageMakerRole",
        "service-role/AmazonSageMaker-ExecutionRole",
    ] {
        check(
            Sagemaker,
            &format!(r#"{{"RoleArn": "{role}", {base}}}"#),
            &[],
        );
    }
    check(
        Sagemaker,
        &format!(r#"{{"RoleArn": "arn:aws:iam::12:role/R", {base}}}"#),
        &[
            r#"RoleArn: expected an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole, or a role name of the agent's account such as SageMakerRole, found "arn:aws:iam::12:role/R""#,
        ],
    );
}

#[test]
fn bad_sagemaker_configs() {
    let table: &[(&str, &[&str])] = &[
        (
            "{}",
            &[
                "(document): missing required field `RoleArn`",
                "(document): missing required field `ResourceConfig`",
                "(document): missing required field `StoppingCondition`",
            ],
        ),
        (
            r#"
RoleARN: arn:aws:iam::123456789012:role/R
ResourceConfig:
  InstanceType: m5.xlarge
  InstanceCount: 0
OutputDataConfig:
  S3OutputPath: my-bucket/out
StoppingCondition:
  MaxRuntimeInSeconds: "3600"
  MaxWaitTimeInSeconds: 60
HyperParameters:
  epochs: 10
  lr: "0.1"
AlgorithmSpecification:
  TrainingInputMode: file
  TrainingImage: x
  AlgorithmName: y
Tags:
  - Key: team
VpcConfig:
  SecurityGroupIds: []
TrainingJobName: my_job
"#,
            &[
                "(document): missing required field `RoleArn`",
                "RoleARN: unknown field `RoleARN`; did you mean `RoleArn`?",
                "ResourceConfig: missing required field `VolumeSizeInGB`",
                r#"ResourceConfig.InstanceType: expected an instance type such as ml.m5.xlarge, found "m5.xlarge""#,
                "ResourceConfig.InstanceCount: must be at least 1, found 0",
                r#"OutputDataConfig.S3OutputPath: expected an S3 URL such as s3://bucket/prefix or https://s3.us-east-1.amazonaws.com/bucket/prefix, found "my-bucket/out""#,
                r#"StoppingCondition.MaxRuntimeInSeconds: expected integer, found string "3600"; write it without quotes"#,
                "StoppingCondition.MaxWaitTimeInSeconds: only allowed with `EnableManagedSpotTraining: true`",
                r#"HyperParameters.epochs: expected string, found number; the API takes strings only: write "10""#,
                "AlgorithmSpecification: only one of `TrainingImage`, `AlgorithmName` may be set",
                r#"AlgorithmSpecification.TrainingInputMode: unknown value "file"; did you mean `File`?"#,
                "Tags[0]: missing required field `Value`",
                "VpcConfig: missing required field `Subnets`",
                "VpcConfig.SecurityGroupIds: must have at least 1 item(s), found 0",
                r#"TrainingJobName: expected a training job name: 1 to 63 letters, digits and `-`, starting and ending with a letter or digit, found "my_job""#,
            ],
        ),
        (
            r#"
RoleArn: arn:aws:iam::123456789012:role/R
EnableManagedSpotTraining: true
ResourceConfig:
  InstanceGroups:
    - {InstanceType: ml.g5.xlarge, InstanceCount: 2, InstanceGroupName: gpus}
  InstanceType: ml.m5.xlarge
  VolumeSizeInGB: "${DISK_GB}"
StoppingCondition: {MaxRuntimeInSeconds: 7200, MaxWaitTimeInSeconds: 3600, MaxPendingTimeInSeconds: 60}
InputDataConfig:
  - ChannelName: train
    DataSource: {}
  - DataSource: {S3DataSource: {S3Uri: s3://b/p}}
Environment: {"1BAD": x, OK: ["list"]}
"#,
            &[
                "ResourceConfig.InstanceType: cannot be set together with `InstanceGroups`",
                "StoppingCondition.MaxWaitTimeInSeconds: must be at least MaxRuntimeInSeconds (7200), found 3600",
                "StoppingCondition.MaxPendingTimeInSeconds: must be at least 7200, found 60",
                "InputDataConfig[0].DataSource: expected one of `S3DataSource`, `FileSystemDataSource`",
                "InputDataConfig[1]: missing required field `ChannelName`",
                "InputDataConfig[1].DataSource.S3DataSource: missing required field `S3DataType`",
                r#"Environment["1BAD"]: invalid name "1BAD": expected letters, digits and `_`, not starting with a digit"#,
                "Environment.OK: expected string, found list",
            ],
        ),
    ];
    for (input, expected) in table {
        check(Sagemaker, input, expected);
    }
}

#[test]
fn bad_vertex_configs() {
    let table: &[(&str, &[&str])] = &[
        ("{}", &["(document): missing required field `spec`"]),
        (
            "spec: {}\nrun: {timeout: 0}\nextra: 1\n",
            &[
                "spec: missing required field `worker_pool_specs`",
                "spec: missing required field `staging_bucket`",
                "run.timeout: must be at least 1, found 0",
                "extra: unknown field `extra`; expected one of `spec`, `run`",
            ],
        ),
        (
            r#"
spec:
  staging_bucket: s3://wrong-cloud
  service_account: a@b.iam.gserviceaccount.com
  worker_pool_specs:
    - machine_spec:
        machine_type: ""
        accelerator_type: NVIDIA_TESLA_T5
        accelerator_count: 1
      replica_count: -1
      container_spec: {image_uri: x, command: python}
      python_package_spec: {}
    - machine_spec: {machine_type: n1-standard-4, accelerator_count: 2}
    - machine_spec: {machine_type: n1-standard-4, accelerator_type: NVIDIA_L4}
      replicaCount: 1
      replica_count: 1
    - containerSpec: {imageURI: x}
  workerPoolSpecs: []
  labels: {Team: ml}
run:
  staging_bucket: gs://b
  timeout: 1h
  restart_job_on_worker_restart: "false"
  scheduling_strategy: spot
"#,
            &[
                r#"spec.staging_bucket: expected a Cloud Storage URL such as gs://my-bucket/staging, found "s3://wrong-cloud""#,
                "spec.service_account: `service_account` belongs under `run`",
                "spec.worker_pool_specs[0]: only one of `container_spec`, `python_package_spec` may be set",
                "spec.worker_pool_specs[0].machine_spec.machine_type: must not be empty",
                r#"spec.worker_pool_specs[0].machine_spec.accelerator_type: unknown value "NVIDIA_TESLA_T5"; did you mean `NVIDIA_TESLA_T4`?"#,
                "spec.worker_pool_specs[0].replica_count: must be at least 0, found -1",
                "spec.worker_pool_specs[0].container_spec.command: expected list, found string",
                "spec.worker_pool_specs[0].python_package_spec: missing required field `executor_image_uri`",
                "spec.worker_pool_specs[0].python_package_spec: missing required field `package_uris`",
                "spec.worker_pool_specs[0].python_package_spec: missing required field `python_module`",
                "spec.worker_pool_specs[1].machine_spec.accelerator_count: 2 accelerator(s) requested but no `accelerator_type` is set",
                "spec.worker_pool_specs[2].machine_spec: `accelerator_count` must be at least 1 with accelerator_type NVIDIA_L4",
                "spec.worker_pool_specs[2].replica_count: `replica_count` is the same field as `replicaCount`, which is set already; set it once",
                "spec.worker_pool_specs[3]: missing required field `machine_spec`",
                "spec.worker_pool_specs[3].containerSpec.imageURI: unknown field `imageURI`; did you mean `image_uri`?",
                "spec.workerPoolSpecs: `workerPoolSpecs` is the same field as `worker_pool_specs`, which is set already; set it once",
                r#"spec.labels.Team: invalid label key "Team": expected 1 to 63 lowercase letters, digits, `_` or `-`, starting with a letter"#,
                "run.staging_bucket: `staging_bucket` belongs under `spec`",
                r#"run.timeout: expected seconds as an integer or a duration such as "3600s", found "1h""#,
                r#"run.restart_job_on_worker_restart: expected boolean, found string "false"; write it without quotes"#,
                r#"run.scheduling_strategy: unknown value "spot"; did you mean `SPOT`?"#,
            ],
        ),
    ];
    for (input, expected) in table {
        check(Vertex, input, expected);
    }
}

#[test]
fn bad_docker_configs() {
    let table: &[(&str, &[&str])] = &[
        (
            "just a string",
            &["(document): expected object, found string"],
        ),
        (
            r#"
env: [1, "=x", "OK=1"]
volume:
  - data:/data:ro,rw
  - /host:relative
  - "@weird:/x"
  - /a:/b:c:d
gpus: 0
memory: 4 gigs
memory-swap: 1g
cpus: many
shm_size: -5
network: "bad network"
workdir: relative/dir
ulimit: [nofile=2048:1024, nofiles=1]
pids-limit: 1.5
detach: true
restart: always
privileged: "yes"
cap-add: [SYS_ADMN]
pid: container
entrypoint: {a: 1}
publish: ["70000:80", "1.2.3:80:80", "8080:80/http"]
add-host: [db]
security-opt: [seccomp, apparmor=unconfined, no-new-privileges=maybe, seccom=x]
shm-siz: 1g
"#,
            &[
                "env[0]: expected string, found number",
                "env[1]: environment variable name must not be empty",
                "volume[0]: `ro` and `rw` cannot both be set",
                r#"volume[1]: the volume target must be an absolute path, found "relative""#,
                r#"volume[2]: invalid volume source "@weird": expected an absolute host path or a volume name (letters, digits, `_`, `.`, `-`)"#,
                r#"volume[3]: invalid volume "/a:/b:c:d"; expected [SOURCE:]TARGET[:OPTIONS]"#,
                "gpus: expected a GPU count of at least 1, found 0",
                r#"memory: invalid size "4 gigs"; expected bytes as an integer, or a number with a unit b, k, m, g, t or p (such as 512m or 4g)"#,
                r#"cpus: expected a number of CPUs such as 1.5, found "many""#,
                "shm_size: invalid size -5; expected bytes as an integer, or a number with a unit b, k, m, g, t or p (such as 512m or 4g)",
                r#"network: expected none, host, bridge, container:<name> or a network name, found "bad network""#,
                r#"workdir: the working directory must be an absolute path, found "relative/dir""#,
                "ulimit[0]: the soft limit 2048 of ulimit `nofile` is above its hard limit 1024",
                "ulimit[1]: unknown ulimit `nofiles`; did you mean `nofile`?",
                "pids-limit: expected integer, found 1.5",
                "detach: `detach` is not supported: the agent always starts the container in the background and supervises it",
                r#"restart: restart policy "always" is not supported: the agent supervises the container and reports its exit; only "no" is accepted"#,
                "privileged: expected boolean, found string",
                r#"cap-add[0]: unknown capability "SYS_ADMN"; did you mean `SYS_ADMIN`?"#,
                r#"pid: expected "host", container:<name>, found "container""#,
                "entrypoint: expected string or list of strings, found object",
                r#"publish[0]: invalid port "70000"; expected 1 to 65535"#,
                r#"publish[1]: invalid IP address "1.2.3" in published port"#,
                r#"publish[2]: unknown protocol "http"; expected tcp, udp or sctp"#,
                r#"add-host[0]: invalid extra host "db"; expected HOST:IP, such as db:10.0.0.5"#,
                r#"security-opt[0]: security option "seccomp" needs a value"#,
                r#"security-opt[2]: invalid value "maybe" for no-new-privileges; expected true or false"#,
                r#"security-opt[3]: unknown security option "seccom=x"; did you mean `seccomp`?"#,
                "shm-siz: unknown field `shm-siz`; did you mean `shm-size`?",
            ],
        ),
        (
            // Macros: exact macros stand for numbers and booleans, strings with macros
            // are not format-checked.
            r#"
memory: "${MEM}"
cpus: "${CPUS}"
gpus: "${GPUS}"
privileged: "${PRIV}"
pids-limit: "${PIDS}"
shm-size: "${SHM_GB}g"
volume: ["${DATA_DIR}:/data"]
stop-timeout: "${A}${B}"
"#,
            &["stop-timeout: expected integer, found string"],
        ),
        (
            "memory: 1m\nmemory-swap: 512m\n",
            &["memory: must be at least 6m (docker's minimum)"],
        ),
        (
            "memory: 1g\nmemory-reservation: 2g\nmemory-swap: -1\n",
            &["memory-reservation: must not be above `memory`"],
        ),
        (
            "memory: 1g\nmemory-swap: 512m\nno-healthcheck: true\nhealth-interval: 30\nhealth-timeout: 5x\ngpus: device=0,count=2\n",
            &[
                "memory-swap: must be at least `memory` (it is memory plus swap), or -1 for unlimited",
                "health-interval: expected string, found number",
                "health-interval: conflicts with `no-healthcheck`",
                r#"health-timeout: invalid duration "5x"; expected a duration such as 30s, 1m30s or 500ms"#,
                "health-timeout: conflicts with `no-healthcheck`",
                "gpus: `count` and `device` cannot both be set",
            ],
        ),
        (
            "env: x=1\nEnv: []\nvolumes: []\nvolume: []\nmount: ['type=bind,target=/x', 'type=volume,source=v', 'tpye=bind,target=/y']\n",
            &[
                "Env: unknown field `Env`; did you mean `env`?",
                "volume: `volume` is the same field as `volumes`, which is set already; set it once",
                "mount[0]: a bind mount needs a `source`",
                "mount[1]: missing `target` (the path in the container)",
                "mount[2]: unknown mount field `tpye`; did you mean `type`?",
            ],
        ),
    ];
    for (input, expected) in table {
        check(Docker, input, expected);
    }
}

#[test]
fn bad_local_process_configs() {
    let table: &[(&str, &[&str])] = &[
        ("", &[]),
        (
            "env: 3\nworking_dir: ''\nshell: 1\ncommand: x\n",
            &[
                r#"env: expected object or list of "NAME=VALUE" strings, found number"#,
                "working_dir: must not be empty",
                "shell: expected boolean, found number",
                "command: unknown field `command`; expected one of `env`, `working_dir`, `shell`",
            ],
        ),
        (
            "workdir: /a\nworking-dir: /b\nenv: {'A=B': x, C: [1]}\nshel: true\n",
            &[
                "working-dir: `working-dir` is the same field as `workdir`, which is set already; set it once",
                r#"env["A=B"]: environment variable name `A=B` must not contain `=`"#,
                "env.C: expected string, found list",
                "shel: unknown field `shel`; did you mean `shell`?",
            ],
        ),
    ];
    for (input, expected) in table {
        check(LocalProcess, input, expected);
    }
}

mod never_panics {
    use hoist_core::resource::{ResourceType, docker, validate_config};
    use proptest::prelude::*;
    use serde_json::Value;

    /// Keys that lead the checkers deep into their schemas, plus a few odd ones.
    const KEYS: &[&str] = &[
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "template",
        "containers",
        "initContainers",
        "name",
        "image",
        "env",
        "value",
        "valueFrom",
        "secretKeyRef",
        "resources",
        "limits",
        "requests",
        "cpu",
        "nvidia.com/gpu",
        "volumes",
        "volumeMounts",
        "emptyDir",
        "hostPath",
        "tolerations",
        "operator",
        "labels",
        "annotations",
        "nodeSelector",
        "securityContext",
        "seccompProfile",
        "ports",
        "restartPolicy",
        "backoffLimit",
        "RoleArn",
        "ResourceConfig",
        "InstanceGroups",
        "InstanceType",
        "InstanceCount",
        "VolumeSizeInGB",
        "StoppingCondition",
        "MaxWaitTimeInSeconds",
        "EnableManagedSpotTraining",
        "InputDataConfig",
        "DataSource",
        "S3DataSource",
        "HyperParameters",
        "AlgorithmSpecification",
        "Tags",
        "run",
        "worker_pool_specs",
        "workerPoolSpecs",
        "machine_spec",
        "accelerator_type",
        "accelerator_count",
        "container_spec",
        "staging_bucket",
        "timeout",
        "volume",
        "gpus",
        "memory",
        "memory-swap",
        "memory_reservation",
        "cpus",
        "shm-size",
        "ulimit",
        "publish",
        "device",
        "security-opt",
        "mount",
        "cap-add",
        "network",
        "no-healthcheck",
        "health-cmd",
        "working_dir",
        "shell",
        "",
        "x.y/z",
        "${A}",
    ];

    const STRINGS: &[&str] = &[
        "",
        "all",
        "host",
        "1",
        "-1",
        "0.5",
        "4g",
        "2Gi",
        "500m",
        "${A}",
        "${A}${B}",
        "a=b",
        "=",
        "/a:/b:ro",
        "/a:/b:c:d",
        "device=0,1",
        "count=2",
        "nofile=1:2",
        "[::1]:80:80",
        "type=bind",
        "container:x",
        "seccomp=unconfined",
        "Never",
        "Always",
        "ml.m5.xlarge",
        "gs://b",
        "s3://b/p",
        "arn:aws:iam::123456789012:role/R",
        "NVIDIA_TESLA_T4",
        "é\u{0}\u{301}",
        "1e999",
        "9999999999999999999999",
    ];

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            proptest::sample::select(STRINGS).prop_map(|s| Value::String(s.to_string())),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 96, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            4 => proptest::sample::select(KEYS).prop_map(str::to_string),
                            1 => ".{0,8}",
                        ],
                        inner,
                    ),
                    0..6,
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn validate_never_panics(config in arb_json()) {
            for resource in ResourceType::ALL {
                if let Err(problems) = validate_config(resource, &config) {
                    prop_assert!(!problems.is_empty());
                }
            }
            let _ = docker::parse(&config);
            let _ = docker::privileged_options(&config);
        }
    }
}
