//! `edgegw store migrate --from embedded|etcd --to embedded|etcd --config PATH`: copies
//! every resource from one store to the other, as stored: ids, revisions' order,
//! thumbprints, and private keys still sealed with the master key (never opened to disk).
//!
//! It refuses to write into a store that already holds resources (nothing is overwritten),
//! and before it writes anything it decodes every record with this configuration's master
//! key, so a copy that the target could not read is never made. Into etcd it also writes
//! the fleet's master-key check (or verifies the one there).

use crate::config::{Config, StoreKind};
use crate::store::embedded::EmbeddedStore;
use crate::store::etcd::{EtcdSettings, EtcdStore, KEY_CHECK};
use crate::store::{self, fleet, records, MasterKey, Store};

use super::{fail, RunError};

/// What a migration copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub certificates: usize,
    pub backends: usize,
    pub apis: usize,
}

enum Opened {
    Embedded(EmbeddedStore),
    Etcd(EtcdStore),
}

fn name(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Embedded => "embedded",
        StoreKind::Etcd => "etcd",
    }
}

/// Copies every resource of the `from` store of `config` into its `to` store.
pub fn migrate(config: &Config, from: StoreKind, to: StoreKind) -> Result<Migrated, RunError> {
    if from == to {
        return Err(RunError(format!(
            "--from and --to are both {}: nothing to migrate",
            name(from)
        )));
    }
    let data_dir = &config.server.data_dir;
    crate::files::create_private_dir_all(data_dir)
        .map_err(|e| fail(&format!("server.data_dir {}", data_dir.display()), e))?;
    let master_key = MasterKey::resolve(
        std::env::var("EDGEGW_MASTER_KEY").ok(),
        config.store.master_key_file.as_deref(),
        data_dir,
    )
    .map_err(|e| fail("master key", e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| fail("starting the etcd client runtime", e))?;
    let open = |kind: StoreKind| -> Result<Opened, RunError> {
        Ok(match kind {
            StoreKind::Embedded => Opened::Embedded(store::open_embedded(data_dir).map_err(|e| {
                fail(
                    &format!(
                        "the embedded store in {} (is an edgegw running on this data dir? stop it first)",
                        data_dir.display()
                    ),
                    e,
                )
            })?),
            StoreKind::Etcd => Opened::Etcd(
                EtcdStore::new(
                    EtcdSettings {
                        endpoints: config.store.etcd_endpoints.clone(),
                        prefix: config.store.etcd_prefix.clone(),
                        timeout: config.store.etcd_timeout,
                    },
                    runtime.handle().clone(),
                )
                .map_err(|e| fail("etcd", e))?,
            ),
        })
    };
    let source = open(from)?;
    let target = open(to)?;
    if let Opened::Etcd(etcd) = &source {
        verify_or_write_key_check(etcd, &master_key, false)?;
    }
    let contents = match &source {
        Opened::Embedded(s) => s.load(),
        Opened::Etcd(s) => s.load(),
    }
    .map_err(|e| fail(&format!("reading the {} store", name(from)), e))?;
    // Every record must open with this key before anything is written.
    let resources = records::load(&contents, &master_key)
        .map_err(|e| fail(&format!("the {} store", name(from)), e))?;
    let existing = match &target {
        Opened::Embedded(s) => s.load(),
        Opened::Etcd(s) => s.load(),
    }
    .map_err(|e| fail(&format!("reading the {} store", name(to)), e))?;
    if !existing.records.is_empty() {
        return Err(RunError(format!(
            "the {} store already holds {} resources: a migration copies into an empty store only, so that nothing is overwritten",
            name(to),
            existing.records.len()
        )));
    }
    match &target {
        Opened::Embedded(s) => s.import(&contents, &[]),
        Opened::Etcd(s) => {
            verify_or_write_key_check(s, &master_key, true)?;
            s.import(&contents.records)
        }
    }
    .map_err(|e| fail(&format!("writing the {} store", name(to)), e))?;
    let migrated = Migrated {
        certificates: resources.certificates.len(),
        backends: resources.backends.len(),
        apis: resources.apis.len(),
    };
    runtime.shutdown_background();
    Ok(migrated)
}

fn verify_or_write_key_check(
    etcd: &EtcdStore,
    key: &MasterKey,
    write: bool,
) -> Result<(), RunError> {
    match etcd.get_fleet_key(KEY_CHECK).map_err(|e| fail("etcd", e))? {
        Some((record, _)) => fleet::verify_key_check(key, &record).map_err(|e| fail("etcd", e)),
        None if write => {
            let record = fleet::key_check(key).map_err(|e| fail("etcd", e))?;
            etcd.put_fleet_key(KEY_CHECK, record, 0)
                .map_err(|e| fail("etcd", e))
                .map(|_| ())
        }
        None => Ok(()),
    }
}
