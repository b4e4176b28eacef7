//! SMTP AUTH through the suite's authentication service (`auth`, see
//! `oxipost_ipc::auth`), and the restriction entries that depend on it.
//!
//! smtpd never decodes credentials: the base64 text of `AUTH` and of each response line goes
//! to the service as it came, and only the service's verdict comes back. The exchanges run
//! on `oxipost_auth_client`'s helper threads (shared with pop3d and imapd), so the event
//! loop never waits for the service; this module adds what is SMTP's own: the
//! `smtpd_sasl_security_options` filter and the MAIL `AUTH=` xtext.
//!
//! The service down or failing is a temporary error (`454 4.7.0 Temporary authentication
//! failure`), never an accept. Nothing here logs a credential.

use std::path::Path;

pub use oxipost_auth_client::{AuthResults, Exchange, StepResult};

/// The mechanisms to offer: asked of the service once at start (blocking, before serving),
/// then filtered by `smtpd_sasl_security_options`. When the service cannot be reached the
/// usual `PLAIN LOGIN` are offered, and every attempt then gets the temporary failure.
pub fn mechanisms(socket: &Path, options: &[String], service: &str) -> Vec<String> {
    filter_mechanisms(oxipost_auth_client::mechanisms(socket, service), options)
}

/// Applies `smtpd_sasl_security_options` with Cyrus SASL's mechanism properties, as
/// Postfix does: `noplaintext` drops PLAIN and LOGIN, `noanonymous` ANONYMOUS,
/// `nodictionary` every mechanism open to an offline dictionary attack (all implemented
/// ones), `noactive` all but those safe from active attacks (none), `mutual_auth` all but
/// those that authenticate the server too (SCRAM), `forward_secrecy` all.
pub fn filter_mechanisms(all: Vec<String>, options: &[String]) -> Vec<String> {
    let has = |o: &str| options.iter().any(|x| x.eq_ignore_ascii_case(o));
    all.into_iter()
        .filter(|m| {
            let m = m.to_ascii_uppercase();
            let plaintext = m == "PLAIN" || m == "LOGIN";
            let mutual = m.starts_with("SCRAM-");
            let refused = (has("noplaintext") && plaintext)
                || (has("noanonymous") && m == "ANONYMOUS")
                || has("nodictionary")
                || has("noactive")
                || has("forward_secrecy")
                || (has("mutual_auth") && !mutual);
            !refused
        })
        .collect()
}

/// RFC 3461 xtext decoding for the MAIL `AUTH=` parameter (`+XX` escapes).
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let all = vec!["PLAIN".into(), "LOGIN".into(), "SCRAM-SHA-256".into()];
        assert_eq!(
            filter_mechanisms(all.clone(), &["noplaintext".into()]),
            vec!["SCRAM-SHA-256".to_string()]
        );
        assert_eq!(
            filter_mechanisms(all.clone(), &["noanonymous".into()]).len(),
            3
        );
        assert_eq!(
            filter_mechanisms(all.clone(), &["mutual_auth".into()]),
            vec!["SCRAM-SHA-256".to_string()]
        );
        assert!(filter_mechanisms(all, &["nodictionary".into()]).is_empty());
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb").as_deref(), Some("a+b"));
        assert_eq!(xtext_decode("a+2").as_deref(), None);
    }
}
