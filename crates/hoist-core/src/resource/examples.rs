//! A valid starting config per resource, as the web UI's create-queue form prefills
//! it: each is a small, typical queue of the W&B documentation's shape, with comments.
//! A test keeps every one valid.

use super::ResourceType;

/// The example config of a resource (YAML, with comments).
pub fn example_config(resource: ResourceType) -> &'static str {
    match resource {
        ResourceType::LocalProcess => {
            "# Runs the job's entrypoint as a process on the agent's machine.\n\
             env:\n  OMP_NUM_THREADS: \"4\"\n"
        }
        ResourceType::Docker => {
            "# Options of `docker run`, as W&B Launch takes them.\n\
             env:\n  - WANDB_PROJECT=demo\n\
             gpus: all\n\
             shm-size: 2g\n\
             memory: 16g\n"
        }
        ResourceType::Kubernetes => {
            "# A Kubernetes Job; the agent fills in the image and command.\n\
             spec:\n\
             \x20 backoffLimit: 0\n\
             \x20 template:\n\
             \x20   spec:\n\
             \x20     restartPolicy: Never\n\
             \x20     containers:\n\
             \x20       - resources:\n\
             \x20           limits:\n\
             \x20             cpu: \"2\"\n\
             \x20             memory: 4Gi\n"
        }
        ResourceType::Sagemaker => {
            "# A partial CreateTrainingJob request; the agent fills in the name, image and environment.\n\
             RoleArn: arn:aws:iam::123456789012:role/SageMakerTrainingRole\n\
             ResourceConfig:\n\
             \x20 InstanceType: ml.m5.xlarge\n\
             \x20 InstanceCount: 1\n\
             \x20 VolumeSizeInGB: 30\n\
             OutputDataConfig:\n\
             \x20 S3OutputPath: s3://my-bucket/outputs\n\
             StoppingCondition:\n\
             \x20 MaxRuntimeInSeconds: 3600\n"
        }
        ResourceType::Vertex => {
            "# A Vertex AI CustomJob; the agent puts the image and command in the first pool.\n\
             spec:\n\
             \x20 worker_pool_specs:\n\
             \x20   - machine_spec:\n\
             \x20       machine_type: n1-standard-4\n\
             \x20     replica_count: 1\n\
             \x20 staging_bucket: gs://my-bucket/staging\n\
             run:\n\
             \x20 restart_job_on_worker_restart: false\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_document;

    #[test]
    fn every_example_is_a_valid_config_of_its_resource() {
        for r in ResourceType::ALL {
            let text = example_config(r);
            let doc = parse_document(text).unwrap_or_else(|e| panic!("{r}: {e}"));
            crate::template::check_usage(&[], &doc).unwrap_or_else(|p| panic!("{r}: {p:?}"));
            if let Err(p) = super::super::validate_config(r, &doc) {
                panic!("{r}: {p:?}");
            }
        }
    }
}
