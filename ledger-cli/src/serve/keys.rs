//! HTTP API keys and their scopes. Keys are kept only as SHA-256 digests and compared digest to digest in
//! constant time, so neither the content nor the length of a key leaks through timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do. No key may assert a gateway actor: only a verified callback is a gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The marketplace backend: commands with user, admin or system actors, and the outbox.
    Backend,
    /// Payout workers: read and claim the outbox, nothing else.
    PayoutWorker,
}

/// One ledger's key digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    backend: Option<[u8; 32]>,
    payout_worker: Option<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |d: &Option<[u8; 32]>| if d.is_some() { "set" } else { "unset" };
        f.debug_struct("ApiKeys")
            .field("backend", &set(&self.backend))
            .field("payout_worker", &set(&self.payout_worker))
            .finish()
    }
}

pub fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl ApiKeys {
    pub fn new(backend: Option<&str>, payout_worker: Option<&str>) -> ApiKeys {
        ApiKeys {
            backend: backend.map(digest),
            payout_worker: payout_worker.map(digest),
        }
    }

    /// The scope of the presented key's digest, if it is one of ours. Both digests are always compared.
    pub fn scope_of(&self, given: &[u8; 32]) -> Option<Scope> {
        let matches = |expected: &Option<[u8; 32]>| {
            // An unset key is compared against a digest no text has (all ones), for the same timing.
            let expected = expected.unwrap_or([0xff; 32]);
            bool::from(given.ct_eq(&expected)) && expected != [0xff; 32]
        };
        let (backend, worker) = (matches(&self.backend), matches(&self.payout_worker));
        if backend {
            Some(Scope::Backend)
        } else if worker {
            Some(Scope::PayoutWorker)
        } else {
            None
        }
    }
}
