//! Group commit for concurrent submitters: commands sent from many tasks are coalesced into batches (bounded
//! size, bounded wait) and each batch is executed by `Executor::execute_batch` in one transaction.

use std::sync::Arc;
use std::time::Duration;

use ledger_core::CommandEnvelope;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::executor::{CommandOutcome, ExecError, Executor};

#[derive(Clone, Debug)]
pub struct GroupCommitConfig {
    /// Most commands in one transaction.
    pub batch_size_max: usize,
    /// How long a batch waits for more commands once it has one.
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

type Reply = oneshot::Sender<Result<CommandOutcome, ExecError>>;
type Submission = (CommandEnvelope, Option<String>, Reply);

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

impl GroupCommitter {
    pub fn spawn(executor: Arc<Executor>, config: GroupCommitConfig) -> GroupCommitter {
        assert!(config.batch_size_max > 0 && config.committers > 0 && config.queue_max > 0);
        let (sender, receiver) = mpsc::channel::<Submission>(config.queue_max);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..config.committers {
            let (executor, receiver, config) = (executor.clone(), receiver.clone(), config.clone());
            tokio::spawn(async move { commit_loop(executor, receiver, config).await });
        }
        GroupCommitter { sender }
    }

    /// Submits one command and waits for its outcome.
    pub async fn submit(
        &self,
        env: CommandEnvelope,
        key: Option<String>,
    ) -> Result<CommandOutcome, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((env, key, reply))
            .await
            .map_err(|_| SubmitError::Stopped)?;
        Ok(answer.await.map_err(|_| SubmitError::Stopped)??)
    }
}

async fn commit_loop(
    executor: Arc<Executor>,
    receiver: Arc<Mutex<mpsc::Receiver<Submission>>>,
    config: GroupCommitConfig,
) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + config.linger;
            while batch.len() < config.batch_size_max {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    Ok(None) | Err(_) => break,
                }
            }
            batch
        };
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|(env, key, reply)| ((env, key), reply))
            .unzip();
        let results = executor.execute_batch(items).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // The submitter may have gone away; its command is committed or not regardless.
            let _ = reply.send(result);
        }
    }
}
