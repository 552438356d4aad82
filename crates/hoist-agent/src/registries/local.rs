//! No registry: images are built into, and run from, the agent's own Docker daemon.
