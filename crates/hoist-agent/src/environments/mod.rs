//! Environments: the cloud the agent runs in (`aws`, `gcp`, `azure`), its default
//! credential chain, and the check made when the agent starts.
