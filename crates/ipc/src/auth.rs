//! The authentication service protocol: `smtpd`, `pop3d` and `imapd` ask the `auth` daemon
//! (socket `queue_directory/private/auth`) to run a SASL exchange and to look users up.
//! The server speaks first with `Hello { protocol: "auth", version: 1 }`; then the client
//! sends [`AuthRequest`] frames and reads one [`AuthReply`] per request. SASL data travels
//! base64-encoded exactly as on the wire of the client protocol, so the protocol daemons
//! never decode credentials themselves; POP3 `USER/PASS` and IMAP `LOGIN` are sent as a
//! `PLAIN` initial response. Replies never echo credentials, and neither side logs them.

use serde::{Deserialize, Serialize};

pub const AUTH_PROTOCOL: &str = "auth";
pub const AUTH_VERSION: u32 = 1;

/// Where a user's mail lives and as whom to touch it (from the user database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The canonical login name (e.g. `alice@example.test` or `alice`).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Mail location in Dovecot's form, e.g. `maildir:~/Maildir` or `mbox:/var/mail/alice`.
    pub mail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRequest {
    /// The mechanisms on offer for a connection (`secured`: TLS or loopback).
    Mechanisms { service: String, secured: bool },
    /// Starts a SASL exchange. `initial` is the base64 initial response (SASL-IR), if any.
    Start {
        id: u64,
        service: String,
        mechanism: String,
        initial: Option<String>,
        client_address: String,
        secured: bool,
        /// TLS channel-binding data (tls-exporter), base64, for `-PLUS` mechanisms.
        #[serde(default)]
        channel_binding: Option<String>,
    },
    /// The client's next base64 response in exchange `id` (`*` cancels, as in SASL).
    Continue { id: u64, response: String },
    /// A user database lookup by name (delivery agents, POP3/IMAP after login).
    Lookup { user: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthReply {
    /// SASL mechanisms the service can serve now; `apop`: plaintext passwords exist, so
    /// pop3d may offer APOP (sent as mechanism `APOP` with `timestamp NUL user NUL digest`).
    Mechanisms {
        mechanisms: Vec<String>,
        #[serde(default)]
        apop: bool,
    },
    /// Send this base64 challenge to the client and continue with its response.
    Challenge {
        id: u64,
        data: String,
    },
    /// Authenticated. `data` is a final server message for mechanisms that have one
    /// (SCRAM's server signature), base64.
    Success {
        id: u64,
        user: UserInfo,
        #[serde(default)]
        data: Option<String>,
    },
    /// Not authenticated. `temporary` is a back-end failure (database down): the protocol
    /// daemon answers with a temporary error, never an accept. `delay_ms` is the pause the
    /// service applied or asks for before the answer reaches the client.
    Failure {
        id: u64,
        reason: String,
        temporary: bool,
        #[serde(default)]
        delay_ms: u64,
    },
    User {
        user: Option<UserInfo>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        let req = AuthRequest::Start {
            id: 1,
            service: "smtp".into(),
            mechanism: "PLAIN".into(),
            initial: Some("AGFsaWNlAHNlY3JldA==".into()),
            client_address: "127.0.0.1".into(),
            secured: true,
            channel_binding: None,
        };
        crate::write_frame(&mut buf, &req).expect("write");
        let back: AuthRequest = crate::read_frame(&mut &buf[..])
            .expect("read")
            .expect("frame");
        assert_eq!(back, req);
    }
}
