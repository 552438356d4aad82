//! The Vertex AI runner: a run is a CustomJob (issue 11, to be written).
