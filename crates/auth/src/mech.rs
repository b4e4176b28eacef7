//! SASL server mechanisms as small sans-IO state machines: decoded client responses in,
//! a challenge, a finished set of credentials, or a failure out. Base64 is the caller's
//! ([`crate::server`]); nothing here logs.

use std::fmt;

/// What a mechanism wants next.
pub enum Step {
    /// Send this (raw) challenge and continue with the client's response.
    Challenge(Vec<u8>),
    /// The client has said who it is and what its password is.
    Credentials { user: String, password: Password },
    /// Malformed or unacceptable exchange (a permanent failure).
    Fail(&'static str),
}

/// A password that never prints itself.
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Mechanisms this service implements, in the order offered.
pub const MECHANISMS: &[&str] = &["PLAIN", "LOGIN"];

/// One exchange in progress.
pub enum Mech {
    Plain,
    Login { user: Option<String> },
}

impl Mech {
    /// The mechanism named `name` (case-insensitive), if implemented.
    pub fn new(name: &str) -> Option<Mech> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mech::Plain),
            "LOGIN" => Some(Mech::Login { user: None }),
            _ => None,
        }
    }

    /// The first step, with the client's initial response (SASL-IR) if it sent one.
    pub fn start(&mut self, initial: Option<&[u8]>) -> Step {
        match (self, initial) {
            (Mech::Plain, None) => Step::Challenge(Vec::new()),
            (Mech::Plain, Some(d)) => plain(d),
            (Mech::Login { .. }, None) => Step::Challenge(b"Username:".to_vec()),
            // An empty initial response carries no user name: ask for it.
            (Mech::Login { .. }, Some([])) => Step::Challenge(b"Username:".to_vec()),
            (m @ Mech::Login { .. }, Some(d)) => m.step(d),
        }
    }

    /// A client response after a challenge.
    pub fn step(&mut self, data: &[u8]) -> Step {
        match self {
            Mech::Plain => plain(data),
            Mech::Login { user } => {
                let Ok(text) = String::from_utf8(data.to_vec()) else {
                    return Step::Fail("invalid UTF-8");
                };
                match user.take() {
                    None => {
                        if text.is_empty() || text.contains('\0') {
                            return Step::Fail("empty user name");
                        }
                        *user = Some(text);
                        Step::Challenge(b"Password:".to_vec())
                    }
                    Some(u) => Step::Credentials {
                        user: u,
                        password: Password(text),
                    },
                }
            }
        }
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`. Proxy authorization (an authzid other
/// than the authcid) is refused.
fn plain(data: &[u8]) -> Step {
    let mut parts = data.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Fail("malformed PLAIN response");
    };
    let (Ok(authzid), Ok(authcid), Ok(passwd)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(authcid),
        std::str::from_utf8(passwd),
    ) else {
        return Step::Fail("invalid UTF-8");
    };
    if authcid.is_empty() {
        return Step::Fail("empty user name");
    }
    if !authzid.is_empty() && authzid != authcid {
        return Step::Fail("proxy authorization is not allowed");
    }
    Step::Credentials {
        user: authcid.to_owned(),
        password: Password(passwd.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(s: Step) -> Option<(String, String)> {
        match s {
            Step::Credentials { user, password } => Some((user, password.0)),
            _ => None,
        }
    }

    #[test]
    fn plain_forms() {
        let mut m = Mech::new("plain").expect("plain");
        assert_eq!(
            creds(m.start(Some(b"\0alice\0pw"))),
            Some(("alice".into(), "pw".into()))
        );
        assert!(creds(m.start(Some(b"bob\0alice\0pw"))).is_none());
        assert!(creds(m.start(Some(b"alice\0pw"))).is_none());
        assert!(matches!(m.start(None), Step::Challenge(c) if c.is_empty()));
        assert_eq!(format!("{:?}", Password("x".into())), "Password(..)");
    }

    #[test]
    fn login_steps() {
        let mut m = Mech::new("LOGIN").expect("login");
        assert!(matches!(m.start(None), Step::Challenge(c) if c == b"Username:"));
        assert!(matches!(m.step(b"alice"), Step::Challenge(c) if c == b"Password:"));
        assert_eq!(creds(m.step(b"pw")), Some(("alice".into(), "pw".into())));
        let mut m = Mech::new("LOGIN").expect("login");
        assert!(matches!(m.start(Some(b"alice")), Step::Challenge(c) if c == b"Password:"));
    }
}
