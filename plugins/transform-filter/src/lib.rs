//! The `filter` transform: keeps the events that match a condition and drops the rest (their
//! acknowledgements count as delivered, so a source's checkpoint moves past them).
//!
//! ```yaml
//! transforms:
//!   alerts:
//!     type: filter
//!     inputs: [detect]
//!     condition:
//!       all:
//!         - is_anomaly: true
//!         - field: stream
//!           not_equals: healthcheck
//!         - any:
//!             - field: message
//!               matches: 'timeout|refused'
//!             - field: anomaly_score
//!               equals: 16.118
//! ```

mod condition;

use async_trait::async_trait;
use deepsentry_core::{BuildContext, Transform, TransformConfig, TransformContext};
use serde::Deserialize;

pub use condition::{Condition, ConditionConfig};

/// Settings of the `filter` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterTransformConfig {
    /// The events to keep.
    pub condition: ConditionConfig,
}

deepsentry_core::register_transform!(
    "filter",
    "Keeps events matching a condition (is_anomaly, field equals / not_equals / matches, all / any)",
    FilterTransformConfig
);

/// A built `filter` transform.
#[derive(Debug)]
pub struct FilterTransform {
    condition: Condition,
}

#[async_trait]
impl TransformConfig for FilterTransformConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Transform>> {
        let condition = Condition::compile(&self.condition, "condition")?;
        Ok(Box::new(FilterTransform { condition }))
    }

    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()> {
        // Building opens nothing.
        self.build(cx).await.map(drop)
    }
}

#[async_trait]
impl Transform for FilterTransform {
    async fn run(self: Box<Self>, mut cx: TransformContext) -> anyhow::Result<()> {
        let discarded = cx
            .metrics
            .counter_with_reason("events_discarded", "filtered");
        while let Some(mut batch) = cx.input.recv().await {
            let before = batch.len();
            batch.events.retain(|event| self.condition.matches(event));
            discarded.add((before - batch.len()) as u64);
            // An emptied batch is still sent: it carries the acknowledgements, and the output
            // settles them when it has nothing to deliver.
            if cx.out.send(batch).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}
