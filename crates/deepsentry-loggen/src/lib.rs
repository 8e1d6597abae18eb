//! Log generators: realistic HDFS block sessions with injected faults ([`hdfs`]). The `demo`
//! source streams them so a pipeline runs with no input at all, and the model's tests and the
//! benchmarks use them as fixtures, deterministic for a seed.

pub mod hdfs;

pub use hdfs::{Fault, GeneratedLine, HdfsGenerator};
