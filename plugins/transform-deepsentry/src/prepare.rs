//! The transform's first stage: a task of its own reads the input and prepares each batch
//! (templates, times, session ids: see [`Prepared`]) while the transform scores the batch
//! before it, so the two halves of the work run on two cores side by side.

use deepsentry_core::input::Input;
use deepsentry_core::AckToken;
use deepsentry_model::scorer::{Prepared, Preparer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches prepared ahead of the scorer: enough to keep it busy, few enough that a pipeline
/// that stops holds little in flight.
const PREPARED_AHEAD: usize = 2;

/// Prepared batches waiting to be scored, with the acknowledgements of their events.
#[derive(Default)]
pub(crate) struct Waiting {
    prepared: Option<Prepared>,
    acks: Vec<AckToken>,
}

impl Waiting {
    /// How many events wait.
    pub(crate) fn len(&self) -> usize {
        self.prepared.as_ref().map_or(0, Prepared::len)
    }

    /// Whether none wait.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a prepared batch after those waiting.
    pub(crate) fn push(&mut self, prepared: Prepared, acks: Vec<AckToken>) {
        match &mut self.prepared {
            Some(waiting) => waiting.append(prepared),
            None => self.prepared = Some(prepared),
        }
        self.acks.extend(acks);
    }

    /// Takes all that waits, if anything does.
    pub(crate) fn take(&mut self) -> Option<(Prepared, Vec<AckToken>)> {
        let Self { prepared, acks } = std::mem::take(self);
        prepared.map(|prepared| (prepared, acks))
    }
}

/// The preparing task; it stops when the input ends or when this is dropped.
pub(crate) struct PrepareStage {
    task: Option<JoinHandle<()>>,
}

impl PrepareStage {
    /// Starts preparing the batches of `input`; they come out of the returned receiver in
    /// order, and it closes when the input does.
    pub(crate) fn start(
        input: Input,
        preparer: Preparer,
    ) -> (Self, mpsc::Receiver<(Prepared, Vec<AckToken>)>) {
        let (prepared, receiver) = mpsc::channel(PREPARED_AHEAD);
        let task = tokio::spawn(prepare_batches(input, preparer, prepared));
        (Self { task: Some(task) }, receiver)
    }

    /// Once its receiver has closed: whether the task ended because the input did (`Ok`), or
    /// failed. A panic there must not pass for the end of the input.
    pub(crate) async fn ended(&mut self) -> anyhow::Result<()> {
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| anyhow::anyhow!("preparing batches for scoring failed: {e}")),
            None => Ok(()),
        }
    }
}

impl Drop for PrepareStage {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Reads `input` and prepares each batch, until the input ends or the receiver is dropped.
async fn prepare_batches(
    mut input: Input,
    preparer: Preparer,
    prepared: mpsc::Sender<(Prepared, Vec<AckToken>)>,
) {
    while let Some(mut batch) = input.recv().await {
        let acks = batch.take_acks();
        let events = std::mem::take(&mut batch.events);
        // CPU work: keep the other tasks of this worker thread moving.
        let batch = tokio::task::block_in_place(|| preparer.prepare(events));
        if prepared.send((batch, acks)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_preparing_task_that_panicked_is_an_error_not_the_end_of_input() {
        let mut finished = PrepareStage {
            task: Some(tokio::spawn(async {})),
        };
        assert!(finished.ended().await.is_ok());
        let mut failed = PrepareStage {
            task: Some(tokio::spawn(async { panic!("a bug in preparing") })),
        };
        let error = failed.ended().await.unwrap_err().to_string();
        assert!(
            error.contains("preparing batches for scoring failed"),
            "{error}"
        );
        // Asked again (the receiver stays closed): nothing more to report.
        assert!(failed.ended().await.is_ok());
    }
}
