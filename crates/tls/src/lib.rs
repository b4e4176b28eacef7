//! TLS server configuration shared by oxipost's network daemons (`smtpd` now, `pop3d` and
//! `imapd` next): it turns Postfix-style parameters (`*_tls_cert_file`, `*_tls_key_file`,
//! `*_tls_chain_files`, `*_tls_protocols`) into one `rustls::ServerConfig`, and describes an
//! established session the way Postfix logs it (`TLSv1.3 with cipher
//! TLS_AES_256_GCM_SHA384 (256/256 bits)`).
//!
//! It owns PEM loading (through `rustls-pki-types`' `PemObject`, with errors that name the
//! file), the key/certificate match check at start, and certificate choice by SNI: every
//! configured key+chain is a candidate, the first whose end-entity certificate is valid for
//! the client's server name and whose key can sign with one of the client's schemes wins;
//! without SNI (or no match) the first one is used. It does no I/O beyond reading the files
//! and knows nothing about sockets: the worker skeleton drives the `ServerConnection`
//! (`read_tls` / `process_new_packets` / `reader` / `writer` / `write_tls`).
//!
//! Certificates are read when a daemon process starts; `mailctl reload` makes master start
//! new processes, which read the files again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection, SupportedProtocolVersion};

/// A configuration problem, always naming the file or parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Where a daemon's keys and certificates are, and which protocols it allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `*_tls_cert_file`: certificate chain (end entity first); may also hold the key.
    pub cert_file: Option<PathBuf>,
    /// `*_tls_key_file` (defaults to the certificate file, as Postfix).
    pub key_file: Option<PathBuf>,
    /// `*_tls_chain_files`: each file holds one private key followed by its chain. Every
    /// file is a separate certificate, chosen by SNI.
    pub chain_files: Vec<PathBuf>,
    /// `*_tls_protocols` (or the mandatory variant), Postfix syntax.
    pub protocols: String,
}

impl TlsFiles {
    /// True when no certificate is configured at all.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.chain_files.is_empty()
    }
}

/// Builds the server configuration: loads every key and chain, checks that each key
/// matches its certificate, and restricts protocol versions.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut keys = Vec::new();
    if let Some(cert) = &files.cert_file {
        let key = files.key_file.as_deref().unwrap_or(cert);
        let chain = load_certs(cert)?;
        let der = load_key(key)?;
        keys.push(certified(&provider, chain, &der, cert, key)?);
    }
    for file in &files.chain_files {
        let der = load_key(file)?;
        let chain = load_certs(file)?;
        keys.push(certified(&provider, chain, &der, file, file)?);
    }
    if keys.is_empty() {
        return Err(TlsError("no TLS certificate configured".into()));
    }
    let versions = parse_protocols(&files.protocols)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError(format!("TLS protocols {:?}: {e}", files.protocols)))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { keys }));
    Ok(Arc::new(config))
}

fn certified(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signer = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError(format!("{}: unusable private key: {e}", key_file.display())))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| {
        TlsError(format!(
            "{}: private key does not match the certificate in {}: {e}",
            key_file.display(),
            cert_file.display()
        ))
    })?;
    Ok(Arc::new(ck))
}

/// All certificates of a PEM file, in order (end entity first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: bad PEM certificate: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| TlsError(format!("{}: no usable private key: {e}", path.display())))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
}

/// Parses a Postfix protocol list (`>=TLSv1`, `!SSLv2, !SSLv3`, `TLSv1.2 TLSv1.3`,
/// `<=TLSv1.2`) into the versions rustls offers (TLS 1.2 and 1.3 only: older ones are
/// never available).
pub fn parse_protocols(spec: &str) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    const ORDER: [&str; 6] = ["sslv2", "sslv3", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"];
    let rank = |name: &str| -> Result<usize, TlsError> {
        ORDER
            .iter()
            .position(|v| v.eq_ignore_ascii_case(name))
            .ok_or_else(|| TlsError(format!("unknown TLS protocol {name:?} in {spec:?}")))
    };
    let mut allowed = [false, false, false, false, true, true];
    let mut included: Option<[bool; 6]> = None;
    for tok in spec
        .split(|c: char| c == ',' || c == ':' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        if let Some(v) = tok.strip_prefix(">=") {
            let r = rank(v)?;
            allowed.iter_mut().take(r).for_each(|a| *a = false);
        } else if let Some(v) = tok.strip_prefix("<=") {
            let r = rank(v)?;
            allowed.iter_mut().skip(r + 1).for_each(|a| *a = false);
        } else if let Some(v) = tok.strip_prefix('!') {
            allowed[rank(v)?] = false;
        } else {
            included.get_or_insert([false; 6])[rank(tok)?] = true;
        }
    }
    if let Some(inc) = included {
        for (a, i) in allowed.iter_mut().zip(inc) {
            *a &= i;
        }
    }
    let mut out = Vec::new();
    if allowed[5] {
        out.push(&rustls::version::TLS13);
    }
    if allowed[4] {
        out.push(&rustls::version::TLS12);
    }
    if out.is_empty() {
        return Err(TlsError(format!(
            "TLS protocols {spec:?} leave neither TLSv1.2 nor TLSv1.3"
        )));
    }
    Ok(out)
}

/// Chooses a certificate by the client's server name (see the crate documentation).
#[derive(Debug)]
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn valid_for(ck: &CertifiedKey, name: &ServerName<'_>) -> bool {
        let Some(der) = ck.cert.first() else {
            return false;
        };
        webpki::EndEntityCert::try_from(der)
            .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let can_sign = |ck: &&Arc<CertifiedKey>| ck.key.choose_scheme(schemes).is_some();
        let by_name = hello
            .server_name()
            .and_then(|n| DnsName::try_from(n.to_owned()).ok())
            .map(ServerName::DnsName)
            .and_then(|name| {
                self.keys
                    .iter()
                    .filter(can_sign)
                    .find(|ck| Self::valid_for(ck, &name))
            });
        by_name
            .or_else(|| self.keys.iter().find(can_sign))
            .or_else(|| self.keys.first())
            .cloned()
    }
}

/// An established TLS session, as Postfix describes it in logs and `Received:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub protocol: String,
    /// The OpenSSL name of the cipher (`TLS_AES_256_GCM_SHA384`,
    /// `ECDHE-RSA-AES256-GCM-SHA384`).
    pub cipher: String,
    /// Symmetric key bits (used and algorithm bits are equal for these ciphers).
    pub bits: u16,
    /// The server name the client asked for (SNI), if any.
    pub sni: Option<String>,
}

impl TlsInfo {
    /// Describes a connection whose handshake is complete.
    pub fn of(conn: &ServerConnection) -> Option<TlsInfo> {
        let suite = conn.negotiated_cipher_suite()?;
        let protocol = match conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let (cipher, bits) = openssl_name(&format!("{:?}", suite.suite()));
        Some(TlsInfo {
            protocol: protocol.to_owned(),
            cipher,
            bits,
            sni: conn.server_name().map(str::to_owned),
        })
    }

    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`.
    pub fn summary(&self) -> String {
        format!(
            "{} with cipher {} ({}/{} bits)",
            self.protocol, self.cipher, self.bits, self.bits
        )
    }
}

/// Maps rustls's IANA-style suite name to OpenSSL's, with its key size.
fn openssl_name(iana: &str) -> (String, u16) {
    let bits = if iana.contains("AES_128") { 128 } else { 256 };
    if let Some(rest) = iana.strip_prefix("TLS13_") {
        return (format!("TLS_{rest}"), bits);
    }
    let name = match iana {
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other,
    };
    (name.to_owned(), bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn protocol_specs() {
        let v = |s: &str| {
            parse_protocols(s).map(|v| {
                v.iter()
                    .map(|p| format!("{:?}", p.version))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(v(">=TLSv1").expect("ok").len(), 2);
        assert_eq!(v("!SSLv2, !SSLv3").expect("ok").len(), 2);
        assert_eq!(v(">=TLSv1.3").expect("ok"), vec!["TLSv1_3"]);
        assert_eq!(v("<=TLSv1.2").expect("ok"), vec!["TLSv1_2"]);
        assert_eq!(v("TLSv1.2").expect("ok"), vec!["TLSv1_2"]);
        assert!(v("<=TLSv1.1").is_err());
        assert!(v(">=TLSv9").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(
            openssl_name("TLS13_AES_256_GCM_SHA384"),
            ("TLS_AES_256_GCM_SHA384".into(), 256)
        );
        assert_eq!(
            openssl_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            ("ECDHE-RSA-AES128-GCM-SHA256".into(), 128)
        );
    }

    fn pem(dir: &Path, name: &str, names: &[&str]) -> (PathBuf, String, String) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let cert = ck.cert.pem();
        let key = ck.signing_key.serialize_pem();
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(key.as_bytes()).expect("write");
        f.write_all(cert.as_bytes()).expect("write");
        (path, cert, key)
    }

    #[test]
    fn loads_and_names_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, _, _) = pem(dir.path(), "a.pem", &["a.example"]);
        let (b, _, _) = pem(dir.path(), "b.pem", &["b.example"]);
        let files = TlsFiles {
            chain_files: vec![a.clone(), b.clone()],
            protocols: ">=TLSv1".into(),
            ..TlsFiles::default()
        };
        server_config(&files).expect("config");
        // A key from one file with the certificate of another: a clear error.
        let mixed = TlsFiles {
            cert_file: Some(a.clone()),
            key_file: Some(b.clone()),
            ..TlsFiles::default()
        };
        let e = server_config(&mixed).expect_err("mismatch");
        assert!(e.0.contains("does not match"), "{e}");
        let missing = TlsFiles {
            cert_file: Some(dir.path().join("nope.pem")),
            ..TlsFiles::default()
        };
        let e = server_config(&missing).expect_err("missing");
        assert!(e.0.contains("nope.pem"), "{e}");
    }
}
