//! Which certificates the client trusts for `https://`: the platform's CA
//! store (Debian's `ca-certificates`, read once through
//! `rustls-native-certs`), plus the CA certificates of a PEM file for
//! services behind an internal CA. rustls with the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The trust roots of an [`Endpoint`](super::Endpoint)'s `https://`
/// connections; cheap to clone.
///
/// ```no_run
/// use leakscope_agent::client::TlsRoots;
///
/// // The system's CAs and the company's internal one.
/// let roots = TlsRoots::with_pem_file("/etc/leakscope/internal-ca.pem".as_ref())?;
/// # Ok::<(), String>(())
/// ```
#[derive(Clone)]
pub struct TlsRoots {
    config: Arc<ClientConfig>,
    /// The extra PEM file, for `Debug`.
    extra: Option<PathBuf>,
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRoots")
            .field("extra", &self.extra)
            .finish_non_exhaustive()
    }
}

/// Largest PEM file of extra roots read (a CA bundle is a few hundred KiB).
const MAX_PEM_FILE: u64 = 4 << 20;

impl TlsRoots {
    /// The platform's CA store only. Read once per process; when it cannot
    /// be read, a warning is logged and no server certificate verifies
    /// (every https request fails with a TLS error saying so).
    pub fn platform() -> TlsRoots {
        static PLATFORM: OnceLock<TlsRoots> = OnceLock::new();
        PLATFORM
            .get_or_init(|| TlsRoots {
                config: config(platform_store()),
                extra: None,
            })
            .clone()
    }

    /// The platform's CA store and every certificate of the PEM file at
    /// `path` (one or more `-----BEGIN CERTIFICATE-----` blocks): how a
    /// service behind an internal CA is trusted. The error names the file
    /// and what is wrong with it.
    pub fn with_pem_file(path: &Path) -> Result<TlsRoots, String> {
        use std::io::Read;
        let shown = path.display();
        let mut pem = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PEM_FILE + 1).read_to_end(&mut pem))
            .map_err(|e| format!("reading CA certificates from {shown}: {e}"))?;
        if pem.len() as u64 > MAX_PEM_FILE {
            return Err(format!(
                "{shown}: larger than {MAX_PEM_FILE} bytes, not a PEM file of CA certificates"
            ));
        }
        let mut store = platform_store();
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{shown}: bad PEM: {e}"))?;
            store
                .add(cert)
                .map_err(|e| format!("{shown}: unusable certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "{shown}: no certificate found (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")"
            ));
        }
        Ok(TlsRoots {
            config: config(store),
            extra: Some(path.to_owned()),
        })
    }

    /// The rustls configuration for connections.
    pub(super) fn client_config(&self) -> &ClientConfig {
        &self.config
    }
}

/// The platform's roots; problems are logged, not fatal.
fn platform_store() -> RootCertStore {
    let mut store = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the platform's CA certificates");
    }
    let (added, ignored) = store.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "platform CA certificates rustls cannot use");
    }
    if added == 0 {
        tracing::warn!(
            "no platform CA certificates found (install ca-certificates): https requests will fail"
        );
    }
    store
}

fn config(store: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // An invariant, not input: ring's provider has TLS 1.2 and 1.3
        // cipher suites and key exchanges.
        .expect("ring's provider supports the default TLS versions");
    Arc::new(builder.with_root_certificates(store).with_no_client_auth())
}
