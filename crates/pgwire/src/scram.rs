//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it: no
//! channel binding (`n,,`), an empty user name (the server takes the start-up packet's),
//! and the password used as raw UTF-8 (SASLprep is the identity for ASCII passwords;
//! libpq also falls back to the raw bytes when a password does not normalise).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(data);
    m.finalize().into_bytes().into()
}

/// `Hi()`: PBKDF2 with HMAC-SHA-256, one block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut s = salt.to_vec();
    s.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &s);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// One SCRAM exchange.
pub struct Client {
    password: String,
    user: String,
    nonce: String,
    /// `ServerSignature`, known after [`Client::client_final`].
    server_signature: Option<[u8; 32]>,
    verified: bool,
}

/// Iteration counts above this are refused (a hostile server could otherwise make the
/// client spin; PostgreSQL's default is 4096).
const MAX_ITERATIONS: u32 = 1_000_000;

impl Client {
    /// A client for PostgreSQL (empty user name) with `nonce_bytes` of randomness.
    pub fn new(password: &str, nonce_bytes: &[u8]) -> Client {
        Client::with_user("", password, &B64.encode(nonce_bytes))
    }

    /// A client with an explicit user name and printable nonce (the RFC's examples).
    pub fn with_user(user: &str, password: &str, nonce: &str) -> Client {
        Client {
            password: password.to_string(),
            user: user.replace('=', "=3D").replace(',', "=2C"),
            nonce: nonce.to_string(),
            server_signature: None,
            verified: false,
        }
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.nonce)
    }

    /// `client-first-message`.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare())
    }

    /// Takes `server-first-message`, returns `client-final-message`.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<String, String> {
        let sf = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let (mut r, mut s, mut i) = (None, None, None);
        for attr in sf.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => r = Some(v),
                Some(("s", v)) => s = Some(v),
                Some(("i", v)) => i = Some(v),
                Some(("m", _)) => return Err("server requires an unknown SCRAM extension".into()),
                _ => {}
            }
        }
        let (Some(r), Some(s), Some(i)) = (r, s, i) else {
            return Err("malformed server-first-message".into());
        };
        if !r.starts_with(&self.nonce) || r.len() == self.nonce.len() {
            return Err("server nonce does not extend the client's".into());
        }
        let salt = B64.decode(s).map_err(|_| "bad salt encoding")?;
        let iterations: u32 = i.parse().map_err(|_| "bad iteration count")?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(format!("unreasonable iteration count {iterations}"));
        }
        let salted = hi(self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare());
        let client_sig = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_sig.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks `server-final-message` (`v=`), proving the server knew the password.
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), String> {
        let sf = std::str::from_utf8(server_final).map_err(|_| "server-final is not UTF-8")?;
        if let Some(e) = sf.strip_prefix("e=") {
            return Err(format!("server: {e}"));
        }
        let v = sf
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or("malformed server-final-message")?;
        let got = B64.decode(v).map_err(|_| "bad server signature encoding")?;
        match self.server_signature {
            Some(want) if got == want => Ok(()),
            Some(_) => Err("wrong server signature".into()),
            None => Err("server-final before client-final".into()),
        }
    }

    /// Whether the server proved it knows the password.
    pub fn server_verified(&self) -> bool {
        self.verified
    }

    /// [`Client::verify_server`], remembering success.
    pub fn verify_and_record(&mut self, server_final: &[u8]) -> Result<(), String> {
        self.verify_server(server_final)?;
        self.verified = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3.
    #[test]
    fn rfc7677_vector() {
        let mut c = Client::with_user("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = c
            .client_final(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .expect("server-first");
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(!c.server_verified());
        assert!(
            c.verify_and_record(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_ok()
        );
        assert!(c.server_verified());
        assert!(
            c.verify_server(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
        assert!(c.verify_server(b"e=invalid-proof").is_err());
    }

    #[test]
    fn hostile_server_first() {
        let mut c = Client::with_user("", "pw", "abc");
        assert!(c.client_final(b"r=xyz,s=AAAA,i=4096").is_err()); // foreign nonce
        assert!(c.client_final(b"r=abc,s=AAAA,i=4096").is_err()); // not extended
        assert!(c.client_final(b"r=abcd,s=AAAA,i=0").is_err());
        assert!(c.client_final(b"r=abcd,s=AAAA,i=99999999").is_err());
        assert!(c.client_final(b"r=abcd,s=!!,i=1").is_err());
        assert!(c.client_final(b"garbage").is_err());
        assert!(c.client_final(b"r=abcd,s=AAAA,i=1").is_ok());
    }
}
