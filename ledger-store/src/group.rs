//! Group commit for concurrent submitters: commands and callback deliveries sent from many tasks are coalesced
//! into batches (bounded size, bounded wait) and each batch is executed by `Executor::execute_items` in one
//! transaction. A submitter is answered when its batch has committed, never before.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ledger_core::CommandEnvelope;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::executor::{
    BatchAnswer, BatchItem, CommandOutcome, ExecError, Executor, InboxRowBuilder,
};
use crate::types::InboxRow;

#[derive(Clone, Debug)]
pub struct GroupCommitConfig {
    /// Most commands in one transaction.
    pub batch_size_max: usize,
    /// How long a batch waits for more commands once it has one, while another batch is committing (a
    /// lone command on an idle committer is never held back: there is nothing to wait for).
    pub linger: Duration,
    /// Batches in flight at once (each on its own connection).
    pub committers: usize,
    /// Submissions waiting for a committer; submitters wait when it is full (back-pressure).
    pub queue_max: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            batch_size_max: 256,
            linger: Duration::from_millis(2),
            committers: 2,
            queue_max: 8_192,
        }
    }
}

type Reply = oneshot::Sender<Result<BatchAnswer, ExecError>>;
type Submission = (BatchItem, Reply);

/// A handle to submit commands; cheap to clone. Committer tasks stop when every handle is dropped.
#[derive(Clone)]
pub struct GroupCommitter {
    sender: mpsc::Sender<Submission>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the group committer has stopped")]
    Stopped,
    #[error(transparent)]
    Exec(#[from] ExecError),
}

impl From<SubmitError> for ExecError {
    fn from(error: SubmitError) -> ExecError {
        match error {
            SubmitError::Stopped => ExecError::Stopped,
            SubmitError::Exec(error) => error,
        }
    }
}

impl GroupCommitter {
    pub fn spawn(executor: Arc<Executor>, config: GroupCommitConfig) -> GroupCommitter {
        assert!(config.batch_size_max > 0 && config.committers > 0 && config.queue_max > 0);
        let (sender, receiver) = mpsc::channel::<Submission>(config.queue_max);
        let receiver = Arc::new(Mutex::new(receiver));
        let committing = Arc::new(AtomicUsize::new(0));
        for _ in 0..config.committers {
            let (executor, receiver, config, committing) = (
                executor.clone(),
                receiver.clone(),
                config.clone(),
                committing.clone(),
            );
            tokio::spawn(async move { commit_loop(executor, receiver, config, committing).await });
        }
        GroupCommitter { sender }
    }

    /// Submits one command and waits for its outcome.
    pub async fn submit(
        &self,
        env: CommandEnvelope,
        key: Option<String>,
    ) -> Result<CommandOutcome, SubmitError> {
        let (outcome, _) = self.submit_keyed(env, key, None).await?;
        Ok(outcome)
    }

    /// Submits one command, with the builder of its delivery's inbox row when it answers a callback
    /// (`Executor::execute_with_inbox`'s rule), and waits for its outcome and whether it was replayed (the
    /// key's outcome was recorded by an earlier request, so this one appended no event).
    pub async fn submit_keyed(
        &self,
        env: CommandEnvelope,
        key: Option<String>,
        inbox: Option<InboxRowBuilder>,
    ) -> Result<(CommandOutcome, bool), SubmitError> {
        match self.send(BatchItem::Command { env, key, inbox }).await? {
            BatchAnswer::Executed { outcome, replayed } => Ok((outcome, replayed)),
            BatchAnswer::Recorded => unreachable!("a command is answered with its outcome"),
        }
    }

    /// Records a delivery that runs no command (`Executor::record_inbox`'s rule) and waits for its commit.
    pub async fn record(&self, row: InboxRow) -> Result<(), SubmitError> {
        self.send(BatchItem::Record(row)).await.map(|_| ())
    }

    async fn send(&self, item: BatchItem) -> Result<BatchAnswer, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((item, reply))
            .await
            .map_err(|_| SubmitError::Stopped)?;
        Ok(answer.await.map_err(|_| SubmitError::Stopped)??)
    }
}

async fn commit_loop(
    executor: Arc<Executor>,
    receiver: Arc<Mutex<mpsc::Receiver<Submission>>>,
    config: GroupCommitConfig,
    committing: Arc<AtomicUsize>,
) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            // Whatever is queued already joins; more is waited for only while another batch commits.
            while batch.len() < config.batch_size_max {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            if committing.load(Ordering::Acquire) > 0 {
                let deadline = tokio::time::Instant::now() + config.linger;
                while batch.len() < config.batch_size_max {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            committing.fetch_add(1, Ordering::AcqRel);
            batch
        };
        let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let results = executor.execute_items(items).await;
        committing.fetch_sub(1, Ordering::AcqRel);
        for (reply, result) in replies.into_iter().zip(results) {
            // The submitter may have gone away; its command is committed or not regardless.
            let _ = reply.send(result);
        }
    }
}
