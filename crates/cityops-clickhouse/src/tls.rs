//! TLS to ClickHouse: which certificate authorities an `https://` url is checked against, and
//! the HTTP client the official crate runs on.

use crate::Error;
use cityops_config::ClickHouseConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The TLS client settings for `config`: only the CAs of `ca_file` when set, otherwise the
/// system's roots for an `https://` url (none are loaded for `http://`).
pub fn tls_client_config(config: &ClickHouseConfig) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(file) => {
            for cert in read_pem_certificates(file)? {
                roots.add(cert).map_err(|e| Error::Tls {
                    what: format!("clickhouse.ca_file {}", file.display()),
                    reason: e.to_string(),
                })?;
            }
        }
        None if config.url.starts_with("https://") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::Tls {
                    what: "the system's certificate authorities".into(),
                    reason: format!(
                        "none could be loaded ({} errors); set clickhouse.ca_file",
                        found.errors.len()
                    ),
                });
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            what: "the TLS settings".into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

fn read_pem_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let what = || format!("clickhouse.ca_file {}", file.display());
    let bytes = std::fs::read(file).map_err(|e| Error::Tls {
        what: what(),
        reason: e.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls {
            what: what(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::Tls {
            what: what(),
            reason: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

/// ClickHouse closes idle keep-alive connections after 3 s by default: ours are dropped first.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The official client on a hyper client that speaks `http://` and `https://` with `tls`.
pub(crate) fn official_client(tls: &rustls::ClientConfig) -> clickhouse::Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector);
    clickhouse::Client::with_http_client(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_missing_or_not_pem_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("cityops-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        for (file, expected) in [
            (dir.join("missing.pem"), "No such file"),
            (not_pem.clone(), "holds no certificate"),
        ] {
            let config = ClickHouseConfig {
                url: "https://127.0.0.1:8443".into(),
                ca_file: Some(file.clone()),
                ..ClickHouseConfig::default()
            };
            let error = tls_client_config(&config).unwrap_err().to_string();
            assert!(
                error.contains(&file.display().to_string()) && error.contains(expected),
                "{error}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plain_http_needs_no_roots() {
        assert!(tls_client_config(&ClickHouseConfig::default()).is_ok());
    }
}
