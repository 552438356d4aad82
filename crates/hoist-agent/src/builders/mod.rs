//! Builders: turn a run's job source (a git commit, a code artifact) into an image.
//!
//! - `docker`: builds through the Docker Engine API; the tag is a content hash of the
//!   build inputs, and nothing is built when the destination already has that tag.
//! - `noop`: prebuilt images only.
//! - `kaniko`: configured and validated now; it builds in Kubernetes (a later issue).
