//! What the agent lets a Kubernetes queue config do: every privileged setting of
//! [`hoist_core::resource::kubernetes::privileged_settings`] is checked against the
//! agent's `kubernetes` settings ([`KubernetesSettings`]); `secure_mode` refuses all.

use hoist_core::resource::kubernetes::PrivilegedField;

use crate::config::KubernetesSettings;

/// Every refusal for `found` (in document order), or nothing when all are allowed.
/// `secure_mode` refuses every one of them.
pub fn refusals(
    found: &[PrivilegedField],
    settings: &KubernetesSettings,
    secure_mode: bool,
) -> Vec<String> {
    // Skeleton: implemented in the Kubernetes policy work.
    let _ = (settings, secure_mode);
    found
        .iter()
        .map(|f| format!("{}: not allowed on this queue", f.path))
        .collect()
}
