//! TLS of the mailbox access daemons (pop3d, imapd): their `<daemon>_tls_*` parameters
//! resolved once, and the server configuration loaded before the privilege drop (keys may
//! stay readable by root only). Both daemons read the same parameter set under their own
//! prefix, as Dovecot's `ssl` settings serve both protocols.

use std::path::PathBuf;
use std::sync::Arc;

use oxipost_config::Config;
use oxipost_tls::rustls::ServerConfig;

/// `<prefix>_tls_*`, resolved.
#[derive(Debug, Clone, Default)]
pub struct MailTls {
    /// STARTTLS/STLS offered (`may`/`encrypt`) or implicit TLS (`_tls_wrappermode`).
    pub enabled: bool,
    /// `encrypt`: no login before TLS (loopback clients excepted, as Dovecot).
    pub required: bool,
    pub wrapper: bool,
    pub files: oxipost_tls::TlsFiles,
}

impl MailTls {
    /// Reads `<prefix>_tls_security_level` (`none`, `may`, `encrypt`),
    /// `_tls_wrappermode`, `_tls_cert_file`, `_tls_key_file` and `_tls_protocols`.
    pub fn from_config(cfg: &Config, prefix: &str) -> Result<MailTls, String> {
        let name = |p: &str| format!("{prefix}_tls_{p}");
        let get = |p: &str| cfg.get(&name(p)).map_err(|e| format!("{}: {e}", name(p)));
        let wrapper = cfg
            .get_bool(&name("wrappermode"))
            .map_err(|e| format!("{}: {e}", name("wrappermode")))?;
        let level = get("security_level")?.trim().to_ascii_lowercase();
        let (offered, required) = match level.as_str() {
            "" | "none" => (false, false),
            "may" => (true, false),
            "encrypt" => (true, true),
            other => {
                return Err(format!(
                    "{}: {other:?}: expected none, may or encrypt",
                    name("security_level")
                ));
            }
        };
        let path = |s: String| {
            let s = s.trim().to_owned();
            (!s.is_empty()).then(|| PathBuf::from(s))
        };
        let files = oxipost_tls::TlsFiles {
            cert_file: path(get("cert_file")?),
            key_file: path(get("key_file")?),
            chain_files: Vec::new(),
            protocols: cfg
                .get_list(&name("protocols"))
                .map_err(|e| format!("{}: {e}", name("protocols")))?
                .join(" "),
        };
        Ok(MailTls {
            enabled: offered || wrapper,
            required: required || wrapper,
            wrapper,
            files,
        })
    }

    /// Loads the certificates when TLS is enabled. Unusable TLS is a warning and TLS is
    /// then not offered (required TLS keeps refusing plaintext logins, loopback excepted),
    /// except in wrapper mode, where nobody could be served: that is fatal.
    pub fn load(&mut self, prefix: &str) -> Option<Arc<ServerConfig>> {
        if !self.enabled {
            return None;
        }
        let mut tls = None;
        if self.files.is_empty() {
            oxipost_log::warning!(
                "TLS is enabled for {prefix} but no certificate is configured ({prefix}_tls_cert_file)"
            );
        } else {
            match oxipost_tls::server_config(&self.files) {
                Ok(c) => tls = Some(c),
                Err(e) => oxipost_log::warning!("cannot load TLS certificates: {e}"),
            }
        }
        if tls.is_none() {
            if self.wrapper {
                oxipost_log::fatal!("{prefix}_tls_wrappermode = yes but TLS is unusable");
            }
            self.enabled = false;
        }
        tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_wrapper() {
        let cfg = |text: &str| {
            let path = std::path::Path::new("/etc/oxipost/main.cf");
            let main = oxipost_config::MainCf::parse(path, text).expect("main.cf");
            Config::from_main(std::path::Path::new("/etc/oxipost"), main, false)
        };
        let t = MailTls::from_config(&cfg("imapd_tls_security_level = encrypt\n"), "imapd")
            .expect("ok");
        assert!(t.enabled && t.required && !t.wrapper);
        let t = MailTls::from_config(&cfg("pop3d_tls_wrappermode = yes\n"), "pop3d").expect("ok");
        assert!(t.enabled && t.required && t.wrapper);
        let t = MailTls::from_config(&cfg(""), "pop3d").expect("ok");
        assert!(!t.enabled && !t.required);
        let e = MailTls::from_config(&cfg("pop3d_tls_security_level = verify\n"), "pop3d")
            .expect_err("bad level");
        assert!(e.starts_with("pop3d_tls_security_level:"), "{e}");
    }
}
