//! TEMPORARY STUB (replaced by wp/k10store at merge).
use crate::config::BuildContextStore;
use crate::environments::Environment;
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

#[async_trait]
pub trait ContextStore: Send + Sync + std::fmt::Debug {
    fn describe(&self) -> String;
    fn object_url(&self, key: &str) -> String;
    async fn check(&self) -> Result<(), ContextStoreError>;
    async fn size(&self, key: &str) -> Result<Option<u64>, ContextStoreError>;
    async fn upload(
        &self,
        key: &str,
        file: &Path,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError>;
    async fn delete(&self, key: &str) -> Result<(), ContextStoreError>;
}
#[derive(Debug, thiserror::Error)]
pub enum ContextStoreError {
    #[error("{message}")]
    Config { message: String },
}
impl ContextStoreError {
    pub fn is_transient(&self) -> bool {
        false
    }
}
pub fn from_config(
    _store: &BuildContextStore,
    _env: Option<&Arc<dyn Environment>>,
) -> Result<Arc<dyn ContextStore>, ContextStoreError> {
    Err(ContextStoreError::Config {
        message: "stub".into(),
    })
}
