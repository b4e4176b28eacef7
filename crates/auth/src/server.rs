//! One client connection of the service: `Hello`, then [`AuthRequest`] frames answered one
//! by one. A connection holds at most one SASL exchange at a time; the brute-force delay
//! is slept here, on this connection's thread, before a failure is answered.

use std::io::{Read, Write};
use std::thread::sleep;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use oxipost_ipc::auth::{AUTH_PROTOCOL, AUTH_VERSION, AuthReply, AuthRequest};
use oxipost_ipc::{Hello, read_frame, write_frame};

use crate::guard::Guard;
use crate::mech::{self, Mech, Needs, Step};
use crate::passdb::{self, Credentials, Defaults, PassDb, Verdict};
use oxipost_ipc::auth::UserInfo;

/// What every connection shares.
pub struct Service {
    pub passdbs: Vec<PassDb>,
    pub guard: Guard,
    /// Offered mechanisms (`auth_mechanisms`, upper-case, implemented ones only).
    pub mechanisms: Vec<String>,
    pub defaults: Defaults,
    /// The server's name in CRAM-MD5 challenges (`myhostname`).
    pub host: String,
}

/// The exchange in progress on a connection.
struct Exchange {
    id: u64,
    mech: Mech,
    name: String,
    client: String,
    /// The user whose stored entry a proof is checked against (enabled ones only).
    found: Option<UserInfo>,
    /// Proved; the last server message was sent and the client's empty answer is due.
    proved: Option<UserInfo>,
}

/// Log-safe text (user names come from the peer).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

impl Service {
    /// The implemented mechanisms among `wanted` (all when empty).
    pub fn select_mechanisms(wanted: &[String]) -> Vec<String> {
        let all = mech::MECHANISMS.iter().map(|m| (*m).to_owned());
        if wanted.is_empty() {
            return all.collect();
        }
        all.filter(|m| wanted.iter().any(|w| w.eq_ignore_ascii_case(m)))
            .collect()
    }

    /// The configured mechanisms the databases can serve now (a mechanism that needs the
    /// plaintext is offered only when some user has one), and whether APOP can work.
    pub fn available(&self) -> (Vec<String>, bool) {
        let schemes = match passdb::stored_schemes(&self.passdbs) {
            Ok(s) => s,
            Err(e) => {
                oxipost_log::warning!("auth: password database: {}", clean(&e));
                Default::default()
            }
        };
        let plain = schemes.contains("PLAIN") || schemes.contains("CLEARTEXT");
        let scram = plain || schemes.contains("SCRAM-SHA-256");
        let can = |m: &str| match mech::needs(m) {
            Some(Needs::Password) => true,
            Some(Needs::Plaintext) => plain,
            Some(Needs::Scram) => scram,
            None => false,
        };
        let mechs = self.mechanisms.iter().filter(|m| can(m)).cloned().collect();
        (mechs, plain)
    }

    /// Serves one client until it closes.
    pub fn serve<S: Read + Write>(&self, stream: &mut S) {
        if write_frame(stream, &Hello::new(AUTH_PROTOCOL, AUTH_VERSION)).is_err() {
            return;
        }
        let mut exchange: Option<Exchange> = None;
        loop {
            let req = match read_frame::<_, AuthRequest>(stream) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    oxipost_log::warning!("auth: bad request: {e}");
                    return;
                }
            };
            let reply = self.handle(req, &mut exchange);
            if write_frame(stream, &reply).is_err() {
                return;
            }
        }
    }

    fn handle(&self, req: AuthRequest, exchange: &mut Option<Exchange>) -> AuthReply {
        match req {
            AuthRequest::Mechanisms { .. } => {
                let (mechanisms, apop) = self.available();
                AuthReply::Mechanisms { mechanisms, apop }
            }
            AuthRequest::Lookup { user } => {
                match passdb::lookup(&self.passdbs, &user, self.defaults) {
                    Ok(user) => AuthReply::User { user },
                    Err(e) => {
                        oxipost_log::warning!("auth: user lookup: {}", clean(&e));
                        AuthReply::User { user: None }
                    }
                }
            }
            AuthRequest::Start {
                id,
                mechanism,
                initial,
                client_address,
                service,
                ..
            } => {
                *exchange = None;
                // APOP is pop3d's, not a SASL mechanism a client can name.
                let offered = self
                    .mechanisms
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&mechanism))
                    || (mechanism == "APOP" && service == "pop3");
                let Some(mut m) = Mech::new(&mechanism, &self.host).filter(|_| offered) else {
                    return failure(id, "unsupported mechanism", false, 0);
                };
                if self.guard.blocked(&client_address) {
                    oxipost_log::warning!(
                        "auth: {}: too many authentication failures; refusing for now",
                        clean(&client_address)
                    );
                    let d = self.guard.failed(&client_address);
                    sleep(d);
                    return failure(id, "authentication failure", false, millis(d));
                }
                let step = match initial.as_deref().map(|i| B64.decode(i)) {
                    None => m.start(None),
                    Some(Ok(data)) => m.start(Some(&data)),
                    Some(Err(_)) => Step::Fail("malformed base64"),
                };
                let mut x = Exchange {
                    id,
                    mech: m,
                    name: mechanism.to_ascii_uppercase(),
                    client: client_address,
                    found: None,
                    proved: None,
                };
                let reply = self.step(&mut x, step);
                if matches!(reply, AuthReply::Challenge { .. }) {
                    *exchange = Some(x);
                }
                reply
            }
            AuthRequest::Continue { id, response } => {
                let Some(mut x) = exchange.take().filter(|x| x.id == id) else {
                    return failure(id, "no such authentication exchange", false, 0);
                };
                let step = if response == "*" {
                    Step::Fail("cancelled")
                } else if let Some(info) = x.proved.take() {
                    // After the final server message the client answers with nothing.
                    if response.is_empty() {
                        return self.success(&x, info);
                    }
                    Step::Fail("unexpected data after the final server message")
                } else {
                    match B64.decode(response.as_bytes()) {
                        Ok(data) => x.mech.step(&data),
                        Err(_) => Step::Fail("malformed base64"),
                    }
                };
                let reply = self.step(&mut x, step);
                if matches!(reply, AuthReply::Challenge { .. }) {
                    *exchange = Some(x);
                }
                reply
            }
        }
    }

    fn step(&self, x: &mut Exchange, step: Step) -> AuthReply {
        match step {
            Step::Challenge(c) => AuthReply::Challenge {
                id: x.id,
                data: B64.encode(c),
            },
            Step::Fail(why) => {
                oxipost_log::info!("auth: {} from {}: {why}", x.name, clean(&x.client));
                self.fail(x, "authentication failure")
            }
            Step::NeedStored { user } => {
                let stored = match passdb::credentials(&self.passdbs, &user, self.defaults) {
                    Credentials::Found {
                        stored,
                        info,
                        enabled: true,
                    } => {
                        x.found = Some(info);
                        Some(stored)
                    }
                    Credentials::Found { .. } | Credentials::NoUser => None,
                    Credentials::Unavailable(e) => {
                        oxipost_log::warning!("auth: password database: {}", clean(&e));
                        return failure(x.id, "temporary authentication failure", true, 0);
                    }
                };
                let next = x.mech.stored(stored.as_deref());
                self.step(x, next)
            }
            Step::Proved { user, data } => match x.found.take() {
                Some(info) => match data {
                    Some(d) => {
                        x.proved = Some(info);
                        AuthReply::Challenge {
                            id: x.id,
                            data: B64.encode(d),
                        }
                    }
                    None => self.success(x, info),
                },
                _ => self.wrong(x, &user),
            },
            Step::Wrong { user } => self.wrong(x, &user),
            Step::Credentials { user, password } => {
                match passdb::verify(&self.passdbs, &user, &password.0, self.defaults) {
                    Verdict::Ok(info) => self.success(x, info),
                    Verdict::Mismatch | Verdict::NoUser => self.wrong(x, &user),
                    Verdict::Unavailable(e) => {
                        oxipost_log::warning!("auth: password database: {}", clean(&e));
                        failure(x.id, "temporary authentication failure", true, 0)
                    }
                }
            }
        }
    }

    fn success(&self, x: &Exchange, info: UserInfo) -> AuthReply {
        self.guard.succeeded(&x.client);
        oxipost_log::info!(
            "auth: login: user=<{}>, method={}, rip={}",
            clean(&info.user),
            x.name,
            clean(&x.client)
        );
        AuthReply::Success {
            id: x.id,
            user: info,
            data: None,
        }
    }

    /// Wrong credentials (never says which part was wrong).
    fn wrong(&self, x: &Exchange, user: &str) -> AuthReply {
        oxipost_log::info!(
            "auth: {} authentication failed: user=<{}>, rip={}",
            x.name,
            clean(user),
            clean(&x.client)
        );
        self.fail(x, "authentication failure")
    }

    /// A counted failure: grows the client's delay and sleeps it before answering.
    fn fail(&self, x: &Exchange, reason: &str) -> AuthReply {
        let d = self.guard.failed(&x.client);
        sleep(d);
        failure(x.id, reason, false, millis(d))
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn failure(id: u64, reason: &str, temporary: bool, delay_ms: u64) -> AuthReply {
    AuthReply::Failure {
        id,
        reason: reason.to_owned(),
        temporary,
        delay_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardConfig;
    use std::time::Duration;

    fn service(dir: &std::path::Path) -> Service {
        let p = dir.join("users");
        std::fs::write(&p, "alice:{PLAIN}secret::::/home/alice\n").expect("write");
        Service {
            passdbs: vec![PassDb::PasswdFile(p)],
            guard: Guard::new(GuardConfig {
                delay: Duration::from_millis(1),
                limit: 3,
                window: Duration::from_secs(60),
            }),
            mechanisms: Service::select_mechanisms(&[]),
            defaults: Defaults::default(),
            host: "mail.example".into(),
        }
    }

    fn start(s: &Service, x: &mut Option<Exchange>, mech: &str, ir: Option<&[u8]>) -> AuthReply {
        s.handle(
            AuthRequest::Start {
                id: 1,
                service: "smtp".into(),
                mechanism: mech.into(),
                initial: ir.map(|i| B64.encode(i)),
                client_address: "192.0.2.1".into(),
                secured: true,
                channel_binding: None,
            },
            x,
        )
    }

    #[test]
    fn plain_login_and_guard() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = service(dir.path());
        let mut x = None;
        assert!(matches!(
            start(&s, &mut x, "PLAIN", Some(b"\0alice\0secret")),
            AuthReply::Success { .. }
        ));
        assert!(matches!(
            start(&s, &mut x, "LOGIN", None),
            AuthReply::Challenge { .. }
        ));
        let cont = |x: &mut Option<Exchange>, r: &str| {
            s.handle(
                AuthRequest::Continue {
                    id: 1,
                    response: B64.encode(r),
                },
                x,
            )
        };
        assert!(matches!(cont(&mut x, "alice"), AuthReply::Challenge { .. }));
        assert!(matches!(cont(&mut x, "secret"), AuthReply::Success { .. }));
        for _ in 0..3 {
            assert!(matches!(
                start(&s, &mut x, "PLAIN", Some(b"\0alice\0wrong")),
                AuthReply::Failure {
                    temporary: false,
                    ..
                }
            ));
        }
        // Over the limit: even the right password fails now.
        assert!(matches!(
            start(&s, &mut x, "PLAIN", Some(b"\0alice\0secret")),
            AuthReply::Failure { .. }
        ));
        assert!(matches!(
            start(&s, &mut x, "DIGEST-MD5", None),
            AuthReply::Failure { .. }
        ));
    }

    #[test]
    fn cram_md5_and_offer() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = service(dir.path());
        assert_eq!(
            s.available(),
            (
                vec![
                    "PLAIN".to_string(),
                    "LOGIN".into(),
                    "CRAM-MD5".into(),
                    "SCRAM-SHA-256".into()
                ],
                true
            )
        );
        let mut x = None;
        let AuthReply::Challenge { data, .. } = start(&s, &mut x, "CRAM-MD5", None) else {
            panic!("challenge");
        };
        let c = B64.decode(data).expect("b64");
        let d = crate::scheme::hmac_md5_hex(b"secret", &c);
        let r = s.handle(
            AuthRequest::Continue {
                id: 1,
                response: B64.encode(format!("alice {d}")),
            },
            &mut x,
        );
        assert!(matches!(r, AuthReply::Success { user, .. } if user.home == "/home/alice"));
        // Only hashes: no CRAM-MD5, SCRAM or APOP.
        let p = dir.path().join("users");
        std::fs::write(&p, "alice:{SHA512-CRYPT}$6$x$y::::/home/alice\n").expect("write");
        assert_eq!(
            s.available(),
            (vec!["PLAIN".to_string(), "LOGIN".into()], false)
        );
        std::fs::write(
            &p,
            format!(
                "alice:{}::::/h\n",
                crate::scheme::hash("SCRAM-SHA-256", "pw").expect("h")
            ),
        )
        .expect("write");
        assert_eq!(
            s.available(),
            (
                vec!["PLAIN".to_string(), "LOGIN".into(), "SCRAM-SHA-256".into()],
                false
            )
        );
    }
}
