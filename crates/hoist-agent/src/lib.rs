//! hoist-agent
