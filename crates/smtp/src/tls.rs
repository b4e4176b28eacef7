//! The TLS client: security levels and per-destination policy
//! (`smtp_tls_security_level`, `smtp_tls_policy_maps`), the rustls client configuration
//! (trust anchors from `smtp_tls_CAfile`, `smtp_tls_CApath`, or the system bundle in
//! `/etc/ssl/certs`), and a certificate verifier that records whether the server's
//! certificate was trusted and matched the expected names — enforcing that only at the
//! `verify` and `secure` levels, as Postfix does. MTA-STS and DANE are further
//! [`TlsLevel`]s to come: they change which names match and which anchors count, not the
//! driver.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, Error as TlsErr, RootCertStore, SignatureScheme,
};

/// Postfix's TLS security levels for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    /// No TLS.
    None,
    /// Opportunistic: STARTTLS when offered, any certificate.
    May,
    /// TLS required, any certificate.
    Encrypt,
    /// TLS required, certificate trusted and matching the MX host name.
    Verify,
    /// TLS required, certificate trusted and matching the next-hop domain.
    Secure,
    /// DANE (RFC 7672): not implemented yet; treated as `may` with a warning.
    Dane,
    /// DANE only: not implemented yet; treated as `encrypt` with a warning.
    DaneOnly,
}

impl TlsLevel {
    /// Parses a level name (`none`, `may`, `encrypt`, `verify`, `secure`, `dane`,
    /// `dane-only`; `fingerprint` is taken as `secure`).
    pub fn parse(s: &str) -> Option<TlsLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" => TlsLevel::None,
            "may" => TlsLevel::May,
            "encrypt" => TlsLevel::Encrypt,
            "verify" => TlsLevel::Verify,
            "secure" | "fingerprint" => TlsLevel::Secure,
            "dane" => TlsLevel::Dane,
            "dane-only" => TlsLevel::DaneOnly,
            _ => return None,
        })
    }

    /// TLS is mandatory (no plaintext fallback).
    pub fn required(self) -> bool {
        matches!(
            self,
            TlsLevel::Encrypt | TlsLevel::Verify | TlsLevel::Secure | TlsLevel::DaneOnly
        )
    }

    /// The certificate must verify.
    pub fn authenticates(self) -> bool {
        matches!(self, TlsLevel::Verify | TlsLevel::Secure)
    }
}

/// The policy for one destination: the level and, for verify/secure, the names a
/// certificate may match (`match=a:b` from the policy table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    pub level: TlsLevel,
    pub matches: Option<Vec<String>>,
}

impl TlsPolicy {
    /// Parses a `smtp_tls_policy_maps` value (`verify match=hostname:example.org`).
    pub fn parse(value: &str) -> Option<TlsPolicy> {
        let mut words = value.split_whitespace();
        let level = TlsLevel::parse(words.next()?)?;
        let mut matches = None;
        for w in words {
            if let Some(m) = w.strip_prefix("match=") {
                matches = Some(m.split(':').map(|s| s.to_ascii_lowercase()).collect());
            }
        }
        Some(TlsPolicy { level, matches })
    }
}

/// How far a server certificate checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// Not checked or not trusted.
    #[default]
    Untrusted,
    /// The chain leads to a trusted anchor but no expected name matched.
    Trusted,
    /// Trusted and a name matched.
    Verified,
}

impl Trust {
    /// Postfix's word in `... TLS connection established to ...`.
    pub fn word(self) -> &'static str {
        match self {
            Trust::Untrusted => "Untrusted",
            Trust::Trusted => "Trusted",
            Trust::Verified => "Verified",
        }
    }
}

/// Trust anchors: the CA file, every file of the CA directory, else the system bundle.
pub fn root_store(ca_file: Option<&Path>, ca_path: Option<&Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let add_file = |p: &Path, store: &mut RootCertStore| -> Result<(), String> {
        let certs = oxipost_tls::load_certs(p).map_err(|e| e.to_string())?;
        let _ = store.add_parsable_certificates(certs);
        Ok(())
    };
    if let Some(f) = ca_file {
        add_file(f, &mut store)?;
    }
    if let Some(d) = ca_path {
        let rd = std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_file() {
                // Hash links and non-PEM files are skipped silently, as OpenSSL does.
                let _ = add_file(&p, &mut store);
            }
        }
    }
    if ca_file.is_none() && ca_path.is_none() {
        for sys in [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ] {
            let p = Path::new(sys);
            if p.exists() && add_file(p, &mut store).is_ok() {
                break;
            }
        }
    }
    Ok(store)
}

/// A verifier that checks the chain against the anchors and the server's certificate
/// against a list of acceptable names, records the outcome, and fails the handshake only
/// when `enforce` is set. Handshake signatures are always checked.
#[derive(Debug)]
pub struct RecordingVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    names: Vec<ServerName<'static>>,
    enforce: bool,
    outcome: Arc<Mutex<Trust>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsErr> {
        let mut trust = Trust::Untrusted;
        let mut first_err = TlsErr::General("no trust anchors".into());
        if let Some(inner) = &self.inner {
            let mut names: Vec<ServerName<'_>> = self.names.clone();
            if names.is_empty() {
                names.push(server_name.to_owned());
            }
            for (i, n) in names.iter().enumerate() {
                match inner.verify_server_cert(end_entity, intermediates, n, ocsp, now) {
                    Ok(_) => {
                        trust = Trust::Verified;
                        break;
                    }
                    Err(TlsErr::InvalidCertificate(rustls::CertificateError::NotValidForName))
                    | Err(TlsErr::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { .. },
                    )) => {
                        trust = Trust::Trusted;
                        if i == 0 {
                            first_err = TlsErr::InvalidCertificate(
                                rustls::CertificateError::NotValidForName,
                            );
                        }
                    }
                    Err(e) => {
                        if i == 0 {
                            first_err = e;
                        }
                    }
                }
            }
        }
        if let Ok(mut o) = self.outcome.lock() {
            *o = trust;
        }
        if self.enforce && trust != Trust::Verified {
            return Err(first_err);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsErr> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsErr> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration for one connection: `names` are the acceptable certificate
/// names (empty: the SNI name), `enforce` fails the handshake on an unverified
/// certificate. Returns the configuration and where the verifier records its verdict.
pub fn client_config(
    roots: &Arc<RootCertStore>,
    names: &[String],
    enforce: bool,
) -> Result<(Arc<ClientConfig>, Arc<Mutex<Trust>>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = if roots.is_empty() {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("TLS trust anchors: {e}"))?,
        )
    };
    let names = names
        .iter()
        .filter_map(|n| ServerName::try_from(n.trim_start_matches('.').to_string()).ok())
        .collect();
    let outcome = Arc::new(Mutex::new(Trust::Untrusted));
    let verifier = RecordingVerifier {
        inner,
        names,
        enforce,
        outcome: outcome.clone(),
        provider: provider.clone(),
    };
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocols: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((Arc::new(cfg), outcome))
}

/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)` for a finished handshake.
pub fn summary(conn: &rustls::ClientConnection) -> String {
    let proto = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    let (cipher, bits) = match conn.negotiated_cipher_suite() {
        Some(s) => openssl_name(&format!("{:?}", s.suite())),
        None => ("unknown".to_string(), 0),
    };
    format!("{proto} with cipher {cipher} ({bits}/{bits} bits)")
}

fn openssl_name(iana: &str) -> (String, u16) {
    let bits = if iana.contains("AES_128") { 128 } else { 256 };
    if let Some(rest) = iana.strip_prefix("TLS13_") {
        return (format!("TLS_{rest}"), bits);
    }
    let name = iana
        .trim_start_matches("TLS_")
        .replace("_WITH_", "-")
        .replace("AES_256_GCM", "AES256-GCM")
        .replace("AES_128_GCM", "AES128-GCM")
        .replace("CHACHA20_POLY1305", "CHACHA20-POLY1305")
        .replace('_', "-");
    (name, bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_policies() {
        assert_eq!(TlsLevel::parse("Encrypt"), Some(TlsLevel::Encrypt));
        assert!(TlsLevel::parse("bogus").is_none());
        assert!(TlsLevel::Verify.required() && TlsLevel::Verify.authenticates());
        assert!(!TlsLevel::May.required());
        let p = TlsPolicy::parse("secure match=nexthop:.Example.org").expect("policy");
        assert_eq!(p.level, TlsLevel::Secure);
        assert_eq!(
            p.matches,
            Some(vec!["nexthop".into(), ".example.org".into()])
        );
        assert!(TlsPolicy::parse("").is_none());
    }

    #[test]
    fn cipher_names() {
        assert_eq!(
            openssl_name("TLS13_AES_256_GCM_SHA384"),
            ("TLS_AES_256_GCM_SHA384".into(), 256)
        );
        assert_eq!(
            openssl_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").0,
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
    }
}
