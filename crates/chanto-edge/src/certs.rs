//! Which certificate the HTTPS listener serves for which name: the routing
//! table says which certificate (by id) each custom domain has; a
//! [`CertSource`] gives a certificate's chain and key; [`EdgeCerts`] keeps
//! the [`CertStore`] in step with each published table, loading only
//! certificates it has not loaded before.
//!
//! Keys are opened where they are stored (the control plane holds the key
//! that seals them) and live here only as rustls signing keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chanto_store::RoutingTable;
use rustls::sign::CertifiedKey;

use crate::tls::{CertStore, certified_key, challenge_key};

/// Where the edge gets a certificate's chain and key (PEM) by id.
#[async_trait]
pub trait CertSource: Send + Sync {
    /// The chain (leaf first) and the private key of certificate `id`.
    async fn certificate(&self, id: &str) -> Result<(String, String), String>;
}

/// The certificates of the names in the routing table, kept in a [`CertStore`].
pub struct EdgeCerts {
    store: Arc<CertStore>,
    source: Arc<dyn CertSource>,
    /// Certificates loaded so far, by id (dropped when no name uses them).
    loaded: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// The name → certificate id of the last table applied.
    applied: Mutex<Vec<(String, String)>>,
    /// Each name served and when its certificate ends (unix seconds), for `/metrics`.
    expiry: Mutex<Vec<(String, i64)>>,
    /// The TLS-ALPN-01 challenges of the last table applied (name, PEM).
    challenges: Mutex<Vec<(String, String)>>,
}

/// When the leaf of `key` ends (unix seconds), if it parses.
fn not_after(key: &CertifiedKey) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(key.end_entity_cert().ok()?.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl EdgeCerts {
    /// Certificates for `store`, loaded from `source`.
    pub fn new(store: Arc<CertStore>, source: Arc<dyn CertSource>) -> Self {
        Self {
            store,
            source,
            loaded: Mutex::default(),
            applied: Mutex::default(),
            expiry: Mutex::default(),
            challenges: Mutex::default(),
        }
    }

    /// The store the HTTPS listener reads.
    pub fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// Brings the store in step with `table`: every custom domain with a
    /// certificate is served it, and the base domain's wildcards theirs. A certificate that cannot be loaded is
    /// logged and its names keep what they had (or get none).
    pub async fn apply(&self, table: &RoutingTable) {
        self.apply_challenges(table);
        let mut wanted: Vec<(String, String)> = table
            .sites
            .values()
            .flat_map(|part| part.domains.iter())
            .filter_map(|d| Some((d.name.clone(), d.cert.clone()?)))
            // The base domain's wildcards serve every `<site>` and
            // `<branch>--<site>` host (a custom domain's exact name wins).
            .chain(table.base_certs.iter().map(|b| (b.pattern.clone(), b.cert.clone())))
            .collect();
        wanted.sort();
        if *self.applied.lock().expect("certs lock") == wanted {
            return;
        }
        let missing: Vec<String> = {
            let loaded = self.loaded.lock().expect("certs lock");
            let mut ids: Vec<String> =
                wanted.iter().filter(|(_, id)| !loaded.contains_key(id)).map(|(_, id)| id.clone()).collect();
            ids.dedup();
            ids
        };
        let mut fresh = Vec::new();
        let mut failed = false;
        for id in missing {
            match self.source.certificate(&id).await.and_then(|(chain, key)| certified_key(&chain, &key)) {
                Ok(key) => fresh.push((id, key)),
                Err(e) => {
                    failed = true;
                    tracing::warn!(certificate = %id, error = %e, "a certificate could not be loaded; its names keep what they had, and the next routing change tries again")
                }
            }
        }
        let previous: HashMap<String, Arc<CertifiedKey>> =
            self.store_entries_of(&self.applied.lock().expect("certs lock"));
        let mut loaded = self.loaded.lock().expect("certs lock");
        loaded.extend(fresh);
        let entries: Vec<(String, Arc<CertifiedKey>)> = wanted
            .iter()
            .filter_map(|(name, id)| {
                let key = loaded.get(id).cloned().or_else(|| previous.get(name).cloned())?;
                Some((name.clone(), key))
            })
            .collect();
        let in_use: std::collections::HashSet<&String> = wanted.iter().map(|(_, id)| id).collect();
        loaded.retain(|id, _| in_use.contains(id));
        tracing::debug!(names = entries.len(), certificates = loaded.len(), "edge certificates updated");
        *self.expiry.lock().expect("certs lock") =
            entries.iter().filter_map(|(name, key)| Some((name.clone(), not_after(key)?))).collect();
        self.store.replace(entries);
        drop(loaded);
        if !failed {
            *self.applied.lock().expect("certs lock") = wanted;
        }
    }

    /// Brings the TLS-ALPN-01 challenge certificates in step with `table`
    /// (few, and only while orders are under way: parsed again whenever
    /// they change).
    fn apply_challenges(&self, table: &RoutingTable) {
        let mut wanted: Vec<(String, String)> = table
            .sites
            .values()
            .flat_map(|part| part.domains.iter())
            .filter_map(|d| Some((d.name.clone(), d.challenge.as_ref()?.alpn_pem.clone()?)))
            .chain(table.base_challenges.iter().filter_map(|c| Some((c.host.clone(), c.challenge.alpn_pem.clone()?))))
            .collect();
        wanted.sort();
        let mut applied = self.challenges.lock().expect("certs lock");
        if *applied == wanted {
            return;
        }
        let keys = wanted.iter().filter_map(|(name, pem)| match challenge_key(pem) {
            Ok(key) => Some((name.clone(), key)),
            Err(e) => {
                tracing::warn!(domain = %name, error = %e, "a TLS-ALPN-01 challenge certificate could not be loaded; the CA's check of this name fails");
                None
            }
        });
        self.store.replace_challenges(keys);
        tracing::debug!(challenges = wanted.len(), "TLS-ALPN-01 challenges updated");
        *applied = wanted;
    }

    /// Prometheus lines: the store's counters, and the seconds left on the
    /// certificate of each name served (negative once it has expired).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        self.store.render_metrics(out);
        out.push_str("# HELP chanto_edge_certificate_expiry_seconds Seconds until the certificate this edge serves for a name expires (negative: expired).\n# TYPE chanto_edge_certificate_expiry_seconds gauge\n");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        for (name, end) in self.expiry.lock().expect("certs lock").iter() {
            // Names are LDH hostnames; escape anyway, as the format asks.
            let label = name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = writeln!(out, "chanto_edge_certificate_expiry_seconds{{name=\"{label}\"}} {}", end - now);
        }
    }

    fn store_entries_of(&self, applied: &[(String, String)]) -> HashMap<String, Arc<CertifiedKey>> {
        applied.iter().filter_map(|(name, _)| Some((name.clone(), self.store.lookup(name)?))).collect()
    }
}
