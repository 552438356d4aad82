//! SageMaker (JSON 1.1, `X-Amz-Target: SageMaker.*`) and CloudWatch Logs
//! (`Logs_20140328.*`): to be written (issue 11).
