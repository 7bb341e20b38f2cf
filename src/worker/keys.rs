//! Unsealed keys, reused for `SIGNET_KEY_CACHE_SECONDS`. Each (name, fingerprint) has its
//! own slot: a slow unseal (Argon2id, a KMS call being retried) holds up only the jobs of
//! that key, which wait for it rather than unsealing it again, never the jobs of other keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::key::SigningKey;

type Slot = Arc<tokio::sync::Mutex<Option<(Arc<SigningKey>, Instant)>>>;

/// The worker's unsealed keys.
#[derive(Default)]
pub struct KeyCache {
    slots: Mutex<HashMap<(String, String), Slot>>,
}

impl KeyCache {
    /// The key `name` with fingerprint `fpr`: cached if unsealed less than `ttl` ago, else
    /// from `unseal` (and kept, unless `ttl` is zero).
    pub async fn get<E, F>(&self, name: &str, fpr: &str, ttl: Duration, unseal: F) -> Result<Arc<SigningKey>, E>
    where
        F: AsyncFnOnce() -> Result<SigningKey, E>,
    {
        let slot = {
            // A poisoned lock only means a job panicked while holding it; the map is valid.
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            // Forget expired keys nobody is using: their secrets leave memory.
            slots.retain(|_, s| match s.try_lock() {
                Ok(held) => held.as_ref().is_some_and(|(_, at)| at.elapsed() < ttl),
                Err(_) => true,
            });
            slots.entry((name.to_owned(), fpr.to_owned())).or_default().clone()
        };
        let mut held = slot.lock().await;
        if let Some((key, at)) = held.as_ref()
            && at.elapsed() < ttl
        {
            return Ok(key.clone());
        }
        let key = Arc::new(unseal().await?);
        *held = (!ttl.is_zero()).then(|| (key.clone(), Instant::now()));
        Ok(key)
    }
}
