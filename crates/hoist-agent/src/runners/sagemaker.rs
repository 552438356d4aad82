//! The SageMaker runner: a run is a training job (issue 11, to be written).
