//! SASL server mechanisms as small sans-IO state machines: decoded client responses in,
//! a challenge, a finished set of credentials, or a failure out. Base64 is the caller's
//! ([`crate::server`]); nothing here logs.
//!
//! `PLAIN` and `LOGIN` hand over a password to check. `CRAM-MD5` (RFC 2195), `APOP`
//! (RFC 1939, not a SASL mechanism: pop3d sends `timestamp NUL user NUL digest`) and
//! `SCRAM-SHA-256` (RFC 5802, RFC 7677) instead ask for the user's stored entry
//! ([`Step::NeedStored`], answered with [`Mech::stored`]) and check the proof themselves.
//! SCRAM's `-PLUS` variants (channel binding) are not implemented: a client asking for
//! binding (`p=`) is refused, `y` (it could, but thinks the server cannot) is accepted.
//! User names and passwords are compared as given (no SASLprep), which is exact for ASCII.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::crypt::constant_eq;
use crate::scheme::{self, ScramKeys};

/// What a mechanism wants next.
pub enum Step {
    /// Send this (raw) challenge and continue with the client's response.
    Challenge(Vec<u8>),
    /// The client has said who it is and what its password is.
    Credentials { user: String, password: Password },
    /// The mechanism needs `user`'s stored password entry: call [`Mech::stored`].
    NeedStored { user: String },
    /// `user` proved knowledge of the password. `data` is a last server message the client
    /// must see before success (SCRAM's server signature).
    Proved { user: String, data: Option<Vec<u8>> },
    /// A wrong proof, or a user that cannot use this mechanism (a counted failure).
    Wrong { user: String },
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

/// SASL mechanisms this service implements, in the order offered.
pub const MECHANISMS: &[&str] = &["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"];

/// What a mechanism needs of the stored password entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Any scheme: the password is checked against the stored hash.
    Password,
    /// The plaintext (`{PLAIN}`): CRAM-MD5, APOP.
    Plaintext,
    /// `{SCRAM-SHA-256}` keys or the plaintext to derive them from.
    Scram,
}

/// What mechanism `name` needs (None: not implemented). `APOP` is included.
pub fn needs(name: &str) -> Option<Needs> {
    match name.to_ascii_uppercase().as_str() {
        "PLAIN" | "LOGIN" => Some(Needs::Password),
        "CRAM-MD5" | "APOP" => Some(Needs::Plaintext),
        "SCRAM-SHA-256" => Some(Needs::Scram),
        _ => None,
    }
}

/// One exchange in progress.
pub enum Mech {
    Plain,
    Login {
        user: Option<String>,
    },
    CramMd5 {
        host: String,
        challenge: Option<String>,
        response: Option<(String, String)>,
    },
    Apop {
        pending: Option<(String, String, String)>,
    },
    Scram(Box<Scram>),
}

/// SCRAM-SHA-256 server state.
#[derive(Default)]
pub struct Scram {
    gs2_header: String,
    client_first_bare: String,
    client_nonce: String,
    user: String,
    /// After the server-first message.
    server_first: String,
    nonce: String,
    keys: Option<ScramKeys>,
    /// Keys were made up for a user who cannot log in: the proof always fails.
    doomed: bool,
}

impl Mech {
    /// The mechanism named `name` (case-insensitive), if implemented; `host` names the
    /// server in CRAM-MD5's challenge.
    pub fn new(name: &str, host: &str) -> Option<Mech> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mech::Plain),
            "LOGIN" => Some(Mech::Login { user: None }),
            "CRAM-MD5" => Some(Mech::CramMd5 {
                host: host.to_owned(),
                challenge: None,
                response: None,
            }),
            "APOP" => Some(Mech::Apop { pending: None }),
            "SCRAM-SHA-256" => Some(Mech::Scram(Box::default())),
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
            // The server speaks first in CRAM-MD5: no initial response.
            (
                Mech::CramMd5 {
                    host, challenge, ..
                },
                None | Some([]),
            ) => {
                let c = format!(
                    "<{}.{}@{}>",
                    u64::from_be_bytes(scheme::random(8).try_into().unwrap_or([0; 8]))
                        % 10_000_000_000,
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    host
                );
                *challenge = Some(c.clone());
                Step::Challenge(c.into_bytes())
            }
            (Mech::CramMd5 { .. }, Some(_)) => Step::Fail("CRAM-MD5 has no initial response"),
            (Mech::Apop { pending }, Some(d)) => {
                let mut f = d.split(|&b| b == 0);
                let (Some(ts), Some(user), Some(digest), None) =
                    (f.next(), f.next(), f.next(), f.next())
                else {
                    return Step::Fail("malformed APOP request");
                };
                let (Ok(ts), Ok(user), Ok(digest)) = (
                    std::str::from_utf8(ts),
                    std::str::from_utf8(user),
                    std::str::from_utf8(digest),
                ) else {
                    return Step::Fail("invalid UTF-8");
                };
                if !(ts.starts_with('<') && ts.ends_with('>')) || user.is_empty() {
                    return Step::Fail("malformed APOP request");
                }
                *pending = Some((ts.to_owned(), user.to_owned(), digest.to_owned()));
                Step::NeedStored {
                    user: user.to_owned(),
                }
            }
            (Mech::Apop { .. }, None) => Step::Fail("malformed APOP request"),
            (Mech::Scram(_), None | Some([])) => Step::Challenge(Vec::new()),
            (m @ Mech::Scram(_), Some(d)) => m.step(d),
        }
    }

    /// The stored entry asked for with [`Step::NeedStored`]: None when the user does not
    /// exist or is disabled (the exchange then runs on and fails, so that a client cannot
    /// tell unknown users from wrong passwords).
    pub fn stored(&mut self, stored: Option<&str>) -> Step {
        match self {
            Mech::CramMd5 {
                challenge,
                response,
                ..
            } => {
                let (Some(c), Some((user, digest))) = (challenge.as_ref(), response.take()) else {
                    return Step::Fail("unexpected stored credentials");
                };
                match stored.and_then(scheme::plaintext) {
                    Some(pw)
                        if constant_eq(
                            scheme::hmac_md5_hex(pw.as_bytes(), c.as_bytes()).as_bytes(),
                            digest.to_ascii_lowercase().as_bytes(),
                        ) =>
                    {
                        Step::Proved { user, data: None }
                    }
                    _ => Step::Wrong { user },
                }
            }
            Mech::Apop { pending } => {
                let Some((ts, user, digest)) = pending.take() else {
                    return Step::Fail("unexpected stored credentials");
                };
                match stored.and_then(scheme::plaintext) {
                    Some(pw)
                        if constant_eq(
                            scheme::md5_hex(format!("{ts}{pw}").as_bytes()).as_bytes(),
                            digest.to_ascii_lowercase().as_bytes(),
                        ) =>
                    {
                        Step::Proved { user, data: None }
                    }
                    _ => Step::Wrong { user },
                }
            }
            Mech::Scram(s) => s.server_first(stored),
            Mech::Plain | Mech::Login { .. } => Step::Fail("unexpected stored credentials"),
        }
    }

    /// A client response after a challenge.
    pub fn step(&mut self, data: &[u8]) -> Step {
        match self {
            Mech::CramMd5 {
                challenge,
                response,
                ..
            } => {
                if challenge.is_none() || response.is_some() {
                    return Step::Fail("unexpected CRAM-MD5 response");
                }
                let Ok(text) = std::str::from_utf8(data) else {
                    return Step::Fail("invalid UTF-8");
                };
                let Some((user, digest)) = text.rsplit_once(' ') else {
                    return Step::Fail("malformed CRAM-MD5 response");
                };
                if user.is_empty()
                    || digest.len() != 32
                    || !digest.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Step::Fail("malformed CRAM-MD5 response");
                }
                *response = Some((user.to_owned(), digest.to_owned()));
                Step::NeedStored {
                    user: user.to_owned(),
                }
            }
            Mech::Apop { .. } => Step::Fail("unexpected APOP response"),
            Mech::Scram(s) => {
                let Ok(text) = std::str::from_utf8(data) else {
                    return Step::Fail("invalid UTF-8");
                };
                if s.client_first_bare.is_empty() {
                    s.client_first(text)
                } else {
                    s.client_final(text)
                }
            }
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

impl Scram {
    /// `gs2-header client-first-message-bare` (RFC 5802 section 7).
    fn client_first(&mut self, msg: &str) -> Step {
        // gs2-cbind-flag "," [authzid] "," bare
        let mut parts = msg.splitn(3, ',');
        let (Some(cb), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Step::Fail("malformed SCRAM client-first message");
        };
        match cb {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Step::Fail("channel binding is not supported"),
            _ => return Step::Fail("malformed SCRAM client-first message"),
        }
        let authzid = match authzid {
            "" => None,
            a => match a.strip_prefix("a=").and_then(unescape_saslname) {
                Some(a) => Some(a),
                None => return Step::Fail("malformed SCRAM client-first message"),
            },
        };
        let mut attrs = bare.split(',');
        let (Some(n), Some(r)) = (attrs.next(), attrs.next()) else {
            return Step::Fail("malformed SCRAM client-first message");
        };
        if n.starts_with("m=") {
            return Step::Fail("SCRAM extension not supported");
        }
        let Some(user) = n.strip_prefix("n=").and_then(unescape_saslname) else {
            return Step::Fail("malformed SCRAM client-first message");
        };
        let Some(nonce) = r.strip_prefix("r=") else {
            return Step::Fail("malformed SCRAM client-first message");
        };
        if user.is_empty()
            || nonce.is_empty()
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Step::Fail("malformed SCRAM client-first message");
        }
        if authzid.is_some_and(|a| a != user) {
            return Step::Fail("proxy authorization is not allowed");
        }
        self.gs2_header = format!("{cb},{},", parts_authzid(msg));
        self.client_first_bare = bare.to_owned();
        self.client_nonce = nonce.to_owned();
        self.user = user.clone();
        Step::NeedStored { user }
    }

    fn server_first(&mut self, stored: Option<&str>) -> Step {
        if self.client_nonce.is_empty() || !self.server_first.is_empty() {
            return Step::Fail("unexpected stored credentials");
        }
        let keys = match stored.and_then(|s| ScramKeys::for_stored(&self.user, s)) {
            Some(k) => k,
            None => {
                // Unknown user, or only a hash of the password: answer like for a real
                // user (a stable salt, the usual iterations) and fail the proof.
                self.doomed = true;
                let mut k = ScramKeys::derive("", scheme::scram_salt(&self.user), 1);
                k.iterations = scheme::SCRAM_ITERATIONS;
                k.stored_key.copy_from_slice(&scheme::random(32));
                k
            }
        };
        self.nonce = format!("{}{}", self.client_nonce, B64.encode(scheme::random(18)));
        self.server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(&keys.salt),
            keys.iterations
        );
        self.keys = Some(keys);
        Step::Challenge(self.server_first.clone().into_bytes())
    }

    /// `c=...,r=...[,ext],p=proof`: checks the proof and answers with the server signature.
    fn client_final(&mut self, msg: &str) -> Step {
        let Some(keys) = self.keys.take() else {
            return Step::Fail("unexpected SCRAM message");
        };
        let Some((without_proof, proof)) = msg.rsplit_once(",p=") else {
            return Step::Fail("malformed SCRAM client-final message");
        };
        let mut attrs = without_proof.split(',');
        let (Some(c), Some(r)) = (attrs.next(), attrs.next()) else {
            return Step::Fail("malformed SCRAM client-final message");
        };
        if c.strip_prefix("c=") != Some(B64.encode(&self.gs2_header).as_str()) {
            return Step::Fail("SCRAM channel binding data mismatch");
        }
        if r.strip_prefix("r=") != Some(self.nonce.as_str()) {
            return Step::Fail("SCRAM nonce mismatch");
        }
        let Ok(proof) = B64.decode(proof) else {
            return Step::Fail("malformed SCRAM proof");
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = scheme::hmac_sha256(&keys.stored_key, auth_message.as_bytes());
        let user = std::mem::take(&mut self.user);
        if proof.len() != signature.len() || self.doomed {
            return Step::Wrong { user };
        }
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if !constant_eq(&scheme::sha256(&client_key), &keys.stored_key) {
            return Step::Wrong { user };
        }
        let server_sig = scheme::hmac_sha256(&keys.server_key, auth_message.as_bytes());
        Step::Proved {
            user,
            data: Some(format!("v={}", B64.encode(server_sig)).into_bytes()),
        }
    }
}

/// The authzid field of a gs2 header as sent (for rebuilding the header exactly).
fn parts_authzid(msg: &str) -> &str {
    msg.split(',').nth(1).unwrap_or("")
}

/// RFC 5802 saslname: `=2C` is `,`, `=3D` is `=`; any other `=` is malformed.
fn unescape_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.contains('\0')).then_some(out)
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
        let mut m = Mech::new("plain", "h").expect("plain");
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
        let mut m = Mech::new("LOGIN", "h").expect("login");
        assert!(matches!(m.start(None), Step::Challenge(c) if c == b"Username:"));
        assert!(matches!(m.step(b"alice"), Step::Challenge(c) if c == b"Password:"));
        assert_eq!(creds(m.step(b"pw")), Some(("alice".into(), "pw".into())));
        let mut m = Mech::new("LOGIN", "h").expect("login");
        assert!(matches!(m.start(Some(b"alice")), Step::Challenge(c) if c == b"Password:"));
    }

    fn challenge(s: Step) -> Vec<u8> {
        match s {
            Step::Challenge(c) => c,
            _ => panic!("expected a challenge"),
        }
    }

    #[test]
    fn cram_md5() {
        let mut m = Mech::new("CRAM-MD5", "mail.example").expect("cram");
        let c = challenge(m.start(None));
        assert!(c.starts_with(b"<") && c.ends_with(b"@mail.example>"));
        let d = scheme::hmac_md5_hex(b"pw", &c);
        let resp = format!("alice {d}");
        assert!(matches!(m.step(resp.as_bytes()), Step::NeedStored { user } if user == "alice"));
        assert!(matches!(m.stored(Some("{PLAIN}pw")), Step::Proved { .. }));
        let mut m = Mech::new("CRAM-MD5", "h").expect("cram");
        let c = challenge(m.start(None));
        let d = scheme::hmac_md5_hex(b"px", &c);
        let _ = m.step(format!("alice {d}").as_bytes());
        assert!(matches!(m.stored(Some("{PLAIN}pw")), Step::Wrong { .. }));
        let mut m = Mech::new("CRAM-MD5", "h").expect("cram");
        let _ = m.start(None);
        assert!(matches!(m.step(b"alice nothex"), Step::Fail(_)));
        assert!(matches!(
            Mech::new("CRAM-MD5", "h").expect("c").start(Some(b"x")),
            Step::Fail(_)
        ));
    }

    #[test]
    fn apop() {
        let ts = "<1896.697170952@dbc.mtview.ca.us>";
        let mut m = Mech::new("APOP", "h").expect("apop");
        let req = format!("{ts}\0mrose\0c4c9334bac560ecc979e58001b3e22fb");
        assert!(
            matches!(m.start(Some(req.as_bytes())), Step::NeedStored { user } if user == "mrose")
        );
        assert!(matches!(
            m.stored(Some("{PLAIN}tanstaaf")),
            Step::Proved { .. }
        ));
        let mut m = Mech::new("APOP", "h").expect("apop");
        let _ = m.start(Some(req.as_bytes()));
        assert!(matches!(
            m.stored(Some("{SHA512-CRYPT}$6$x")),
            Step::Wrong { .. }
        ));
        assert!(matches!(
            Mech::new("APOP", "h").expect("a").start(Some(b"x\0y")),
            Step::Fail(_)
        ));
    }

    /// A SCRAM-SHA-256 client exchange against `stored`; returns the last step and
    /// whether the server signature verified.
    fn scram_client(user: &str, pw: &str, stored: Option<&str>) -> (Step, bool) {
        let mut m = Mech::new("SCRAM-SHA-256", "h").expect("scram");
        let bare = format!("n={user},r=rOprNGfwEbeRWgbNEkqO");
        let first = format!("n,,{bare}");
        assert!(matches!(
            m.start(Some(first.as_bytes())),
            Step::NeedStored { .. }
        ));
        let sf = String::from_utf8(challenge(m.stored(stored))).expect("utf8");
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iter = 0;
        for a in sf.split(',') {
            if let Some(v) = a.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = a.strip_prefix("s=") {
                salt = B64.decode(v).expect("salt");
            } else if let Some(v) = a.strip_prefix("i=") {
                iter = v.parse().expect("i");
            }
        }
        assert!(nonce.starts_with("rOprNGfwEbeRWgbNEkqO") && nonce.len() > 20);
        let k = ScramKeys::derive(pw, salt.clone(), iter);
        let salted = scheme::hi(pw.as_bytes(), &salt, iter);
        let client_key = scheme::hmac_sha256(&salted, b"Client Key");
        let without = format!("c=biws,r={nonce}");
        let am = format!("{bare},{sf},{without}");
        let sig = scheme::hmac_sha256(&k.stored_key, am.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        let last = m.step(format!("{without},p={}", B64.encode(proof)).as_bytes());
        let want = format!(
            "v={}",
            B64.encode(scheme::hmac_sha256(&k.server_key, am.as_bytes()))
        );
        let ok = matches!(&last, Step::Proved { data: Some(d), .. } if d == want.as_bytes());
        (last, ok)
    }

    #[test]
    fn scram_sha_256() {
        let (s, ok) = scram_client("user", "pencil", Some("{PLAIN}pencil"));
        assert!(matches!(s, Step::Proved { user, .. } if user == "user") && ok);
        let stored = scheme::hash("SCRAM-SHA-256", "pencil").expect("hash");
        assert!(scram_client("user", "pencil", Some(&stored)).1);
        assert!(matches!(
            scram_client("user", "pencil!", Some(&stored)).0,
            Step::Wrong { .. }
        ));
        assert!(matches!(
            scram_client("user", "pencil", None).0,
            Step::Wrong { .. }
        ));
        assert!(matches!(
            scram_client("user", "pencil", Some("{SHA512-CRYPT}$6$x$y")).0,
            Step::Wrong { .. }
        ));
        let mut m = Mech::new("SCRAM-SHA-256", "h").expect("scram");
        assert!(matches!(
            m.start(Some(b"p=tls-exporter,,n=u,r=abc")),
            Step::Fail(_)
        ));
        let mut m = Mech::new("SCRAM-SHA-256", "h").expect("scram");
        assert!(matches!(
            m.start(Some(b"n,a=bob,n=alice,r=abc")),
            Step::Fail(_)
        ));
        let mut m = Mech::new("SCRAM-SHA-256", "h").expect("scram");
        assert!(
            matches!(m.start(Some(b"n,,n=a=2Cb,r=abc")), Step::NeedStored { user } if user == "a,b")
        );
        let mut m = Mech::new("SCRAM-SHA-256", "h").expect("scram");
        assert!(matches!(m.start(Some(b"n,,n=a=x,r=abc")), Step::Fail(_)));
        assert!(matches!(m.start(Some(b"garbage")), Step::Fail(_)));
    }
}
