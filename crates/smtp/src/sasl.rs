//! The SASL client for servers that want authentication (`smtp_sasl_auth_enable`):
//! credentials from `smtp_sasl_password_maps` (`[host]:port user:password`) and the choice
//! of mechanism (PLAIN, then LOGIN) under `smtp_sasl_security_options` — whose Postfix
//! default `noplaintext` forbids both, exactly as with Cyrus SASL, so a site opts in with
//! `smtp_sasl_security_options = noanonymous` (or the `_tls_` variant for TLS sessions).
//! Passwords never reach a log line.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use oxipost_maps::Maps;

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ****)", self.user)
    }
}

/// Looks up credentials for a session: the next hop as written (`[host]:port`), then
/// without the port, then the server's host name with and without the port, as Postfix
/// tries the remote host and the next-hop destination. `Err` is a table failure (defer).
pub fn lookup(
    maps: &Maps,
    nexthop: &str,
    host: &str,
    port: u16,
) -> Result<Option<Credentials>, String> {
    let mut keys = vec![nexthop.to_string()];
    if let Some((h, _)) = nexthop.rsplit_once("]:") {
        keys.push(format!("{h}]"));
    }
    keys.push(format!("[{host}]:{port}"));
    keys.push(format!("[{host}]"));
    keys.push(format!("{host}:{port}"));
    keys.push(host.to_string());
    let bare = nexthop
        .trim_start_matches('[')
        .split(']')
        .next()
        .unwrap_or("");
    keys.push(bare.to_string());
    keys.dedup();
    for k in keys.iter().filter(|k| !k.is_empty()) {
        match maps.lookup(k) {
            Ok(Some(v)) => {
                let (user, password) = v.split_once(':').unwrap_or((v.as_str(), ""));
                return Ok(Some(Credentials {
                    user: user.trim().to_string(),
                    password: password.to_string(),
                }));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("smtp_sasl_password_maps: {e}")),
        }
    }
    Ok(None)
}

/// The mechanism to use among those the server offers: PLAIN or LOGIN, allowed by the
/// mechanism filter (empty: any) and the security options (`noplaintext` forbids both).
pub fn choose(offered: &[String], filter: &[String], options: &[String]) -> Option<&'static str> {
    if options.iter().any(|o| o == "noplaintext") {
        return None;
    }
    ["PLAIN", "LOGIN"].into_iter().find(|m| {
        offered.iter().any(|o| o == m) && (filter.is_empty() || filter.iter().any(|f| f == m))
    })
}

/// The PLAIN initial response (RFC 4616), base64.
pub fn plain_response(c: &Credentials) -> String {
    let mut raw = Vec::with_capacity(c.user.len() + c.password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(c.user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(c.password.as_bytes());
    STANDARD.encode(raw)
}

/// base64 of a LOGIN answer.
pub fn encode(s: &str) -> String {
    STANDARD.encode(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_maps::MapConfig;

    #[test]
    fn lookup_order_and_mechanisms() {
        let maps = Maps::open(
            "inline:{ [relay.example]:587=u1:p:w, mx.example=u2:pw }",
            &MapConfig::default(),
        )
        .expect("maps");
        let c = lookup(&maps, "[relay.example]:587", "relay.example", 587)
            .expect("ok")
            .expect("found");
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u1", "p:w"));
        let c = lookup(&maps, "example", "mx.example", 25)
            .expect("ok")
            .expect("host");
        assert_eq!(c.user, "u2");
        assert!(lookup(&maps, "other", "other", 25).expect("ok").is_none());
        assert!(!format!("{c:?}").contains("pw"));
        let offered = vec!["LOGIN".to_string(), "PLAIN".to_string()];
        assert_eq!(
            choose(&offered, &[], &["noanonymous".into()]),
            Some("PLAIN")
        );
        assert_eq!(choose(&offered, &["LOGIN".into()], &[]), Some("LOGIN"));
        assert_eq!(choose(&offered, &[], &["noplaintext".into()]), None);
        assert_eq!(choose(&["CRAM-MD5".into()], &[], &[]), None);
        assert_eq!(
            plain_response(&Credentials {
                user: "a".into(),
                password: "b".into()
            }),
            "AGEAYg=="
        );
    }
}
