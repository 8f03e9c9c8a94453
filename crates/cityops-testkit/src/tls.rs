//! A throwaway certificate authority and a server certificate for 127.0.0.1, made with
//! `openssl` for services a test runs with TLS (mosquitto, the Kafka broker's TLS front,
//! ClickHouse's HTTPS port).

use crate::support::require_binary;
use std::path::{Path, PathBuf};

/// The PEM files [`make_certificates`] writes.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA certificate clients trust (`ca.pem`).
    pub ca_file: PathBuf,
    /// The server certificate, for `IP:127.0.0.1` and `DNS:localhost` (`server.pem`).
    pub cert_file: PathBuf,
    /// The server's private key, unencrypted (`server.key`).
    pub key_file: PathBuf,
}

/// Makes a CA valid two days and a server certificate it signed, in `dir`.
pub fn make_certificates(dir: &Path) -> TestCertificates {
    let openssl = require_binary("openssl");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", openssl.display()));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write san.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=cityops test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    TestCertificates {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
    }
}
