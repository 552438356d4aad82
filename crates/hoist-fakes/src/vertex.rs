//! Vertex AI CustomJobs (REST v1), Cloud Logging `entries:list` and Google's OAuth
//! token endpoint: to be written (issue 11).
