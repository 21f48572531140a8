//! `GET /readyz`'s check: the store first (a fleet node without a configuration), then
//! every worker's pulse (its event loop has run, and it accepts).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::readiness;
use crate::steering::Pulse;

#[test]
fn ready_once_configured_and_every_worker_serves() {
    let pulses: Vec<Arc<Pulse>> = (0..2).map(|_| Arc::new(Pulse::default())).collect();
    let configured = Arc::new(AtomicBool::new(false));
    let ready = readiness(pulses.clone(), Some(configured.clone()));
    let reason = |r: Result<(), crate::admin::NotReady>| r.err().map(|n| n.reason);

    assert_eq!(
        reason(ready()),
        Some("StoreNotLoaded"),
        "the store comes first"
    );
    configured.store(true, Ordering::Relaxed);
    let not_ready = ready().err().map(|n| n.message);
    assert_eq!(
        not_ready.as_deref(),
        Some("2 of 2 data-plane workers are not serving.")
    );
    pulses[0].beat();
    assert_eq!(reason(ready()), Some("WorkersNotServing"));
    pulses[1].beat();
    assert_eq!(ready(), Ok(()));
    // A worker whose accept loop ended (shutdown, or it failed) does not serve.
    pulses[1].set_accepting(false);
    assert_eq!(reason(ready()), Some("WorkersNotServing"));

    // The embedded store: loaded before the admin API runs at all.
    let embedded = readiness(pulses[..1].to_vec(), None);
    assert_eq!(embedded(), Ok(()));
}
