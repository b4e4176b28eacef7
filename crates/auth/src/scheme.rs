//! Dovecot password schemes: a stored password is `{SCHEME}data`; without a prefix it is
//! `CRYPT` (the host's crypt(3)), as Dovecot's default. `SHA512-CRYPT` and `SHA256-CRYPT`
//! (sha-crypt), `BLF-CRYPT` (bcrypt), `ARGON2ID`/`ARGON2I` (argon2), `CRYPT` (libcrypt, so
//! also yescrypt), `PLAIN`/`CLEARTEXT`, and `SCRAM-SHA-256` (Dovecot's
//! `iterations,salt,storedkey,serverkey`, all base64). SCRAM-SHA-256 can be served from
//! `SCRAM-SHA-256` and plaintext entries; CRAM-MD5 and APOP need the plaintext.

use argon2::password_hash::PasswordVerifier as _;

/// Splits `{SCHEME}data`.
pub fn split(stored: &str) -> (String, &str) {
    if let Some(rest) = stored.strip_prefix('{')
        && let Some((scheme, data)) = rest.split_once('}')
    {
        return (scheme.to_ascii_uppercase(), data);
    }
    ("CRYPT".to_owned(), stored)
}

/// Why a password could not be checked (as opposed to a mismatch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScheme(pub String);

/// True when `password` matches `stored`.
pub fn verify(password: &str, stored: &str) -> Result<bool, UnknownScheme> {
    let (scheme, data) = split(stored);
    let pw = password.as_bytes();
    Ok(match scheme.as_str() {
        "PLAIN" | "CLEARTEXT" => crate::crypt::constant_eq(pw, data.as_bytes()),
        "SHA512-CRYPT" | "SHA256-CRYPT" => sha_crypt::PasswordHashRef::new(data).is_ok_and(|h| {
            sha_crypt::ShaCrypt::default()
                .verify_password(pw, h)
                .is_ok()
        }),
        "BLF-CRYPT" => bcrypt::verify(pw, data).unwrap_or(false),
        "ARGON2ID" | "ARGON2I" => argon2::Argon2::default().verify_password(pw, data).is_ok(),
        "CRYPT" => crate::crypt::verify(password, data),
        "SCRAM-SHA-256" => ScramKeys::parse(data).is_some_and(|k| {
            let derived = ScramKeys::derive(password, k.salt.clone(), k.iterations);
            crate::crypt::constant_eq(&derived.stored_key, &k.stored_key)
        }),
        other => return Err(UnknownScheme(other.to_owned())),
    })
}

/// True when the scheme stores the password itself (CRAM-MD5 and SCRAM derivation need it).
pub fn is_plain(stored: &str) -> bool {
    matches!(split(stored).0.as_str(), "PLAIN" | "CLEARTEXT")
}

/// The password itself, when the scheme stores it.
pub fn plaintext(stored: &str) -> Option<&str> {
    let (scheme, data) = split(stored);
    matches!(scheme.as_str(), "PLAIN" | "CLEARTEXT").then_some(data)
}

/// Iterations used when SCRAM keys are derived from a plaintext password (RFC 7677's
/// minimum, as Dovecot).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// What a SCRAM-SHA-256 server needs of a user (RFC 5802 section 3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(..)")
    }
}

impl ScramKeys {
    /// Dovecot's `iterations,salt_b64,storedkey_b64,serverkey_b64`.
    pub fn parse(data: &str) -> Option<ScramKeys> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut f = data.trim().split(',');
        let (Some(i), Some(salt), Some(st), Some(sv), None) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return None;
        };
        let iterations: u32 = i.parse().ok().filter(|n| *n > 0)?;
        Some(ScramKeys {
            iterations,
            salt: b64.decode(salt).ok()?,
            stored_key: b64.decode(st).ok()?.try_into().ok()?,
            server_key: b64.decode(sv).ok()?.try_into().ok()?,
        })
    }

    /// Derives the keys from a password (RFC 5802: SaltedPassword = Hi(password, salt, i)).
    pub fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> ScramKeys {
        let salted = hi(password.as_bytes(), &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        ScramKeys {
            iterations,
            salt,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// The keys for `user`'s stored entry: `SCRAM-SHA-256` as stored, a plaintext derived
    /// with [`scram_salt`]; None for other schemes (only a hash of the password is known).
    pub fn for_stored(user: &str, stored: &str) -> Option<ScramKeys> {
        let (scheme, data) = split(stored);
        match scheme.as_str() {
            "SCRAM-SHA-256" => ScramKeys::parse(data),
            "PLAIN" | "CLEARTEXT" => {
                Some(ScramKeys::derive(data, scram_salt(user), SCRAM_ITERATIONS))
            }
            _ => None,
        }
    }

    /// Dovecot's stored form, with the scheme prefix.
    pub fn to_stored(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        format!(
            "{{SCRAM-SHA-256}}{},{},{},{}",
            self.iterations,
            b64.encode(&self.salt),
            b64.encode(self.stored_key),
            b64.encode(self.server_key)
        )
    }
}

/// The salt a user without stored SCRAM keys is offered: the same for a name as long as
/// the process lives (RFC 5802 section 9), so that asking twice does not tell a real
/// stored salt from a made-up one.
pub fn scram_salt(user: &str) -> Vec<u8> {
    static SECRET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| random(32));
    hmac_sha256(secret, user.as_bytes())[..16].to_vec()
}

/// `n` random bytes from the kernel. A failing getrandom(2) leaves the process unable to
/// make nonces or salts safely, so it is fatal.
pub fn random(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    if let Err(e) = getrandom::fill(&mut buf) {
        oxipost_log::fatal!("getrandom: {e}");
    }
    buf
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac as _};
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut m) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

/// RFC 5802's Hi(): PBKDF2-HMAC-SHA-256 with one output block.
pub fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// Lower-case hex of HMAC-MD5 (RFC 2104), CRAM-MD5's digest (RFC 2195).
pub fn hmac_md5_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let Ok(mut m) = hmac::Hmac::<md5::Md5>::new_from_slice(key) else {
        return String::new();
    };
    m.update(data);
    hex(&m.finalize().into_bytes())
}

/// Lower-case hex of MD5, APOP's digest (RFC 1939).
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    hex(&md5::Md5::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A new `{SHA512-CRYPT}` hash with a random salt (what `oxipost-user` stores).
pub fn hash_sha512(password: &str) -> Result<String, String> {
    use sha_crypt::PasswordHasher as _;
    sha_crypt::ShaCrypt::SHA512
        .hash_password(password.as_bytes())
        .map(|h| format!("{{SHA512-CRYPT}}{h}"))
        .map_err(|e| format!("hash password: {e}"))
}

/// A new hash in a Dovecot scheme (`doveadm pw -s SCHEME`): `SHA512-CRYPT`, `BLF-CRYPT`,
/// `ARGON2ID`, `SCRAM-SHA-256` or `PLAIN`.
pub fn hash(scheme: &str, password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher as _;
    match scheme.to_ascii_uppercase().as_str() {
        "SHA512-CRYPT" => hash_sha512(password),
        "BLF-CRYPT" => bcrypt::hash(password, bcrypt::DEFAULT_COST)
            .map(|h| format!("{{BLF-CRYPT}}{h}"))
            .map_err(|e| format!("hash password: {e}")),
        "ARGON2ID" => argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| format!("{{ARGON2ID}}{h}"))
            .map_err(|e| format!("hash password: {e}")),
        "SCRAM-SHA-256" => {
            Ok(ScramKeys::derive(password, random(16), SCRAM_ITERATIONS).to_stored())
        }
        "PLAIN" => Ok(format!("{{PLAIN}}{password}")),
        other => Err(format!("unknown scheme {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let h = hash_sha512("pw").expect("hash");
        assert!(h.starts_with("{SHA512-CRYPT}$6$"));
        assert_eq!(verify("pw", &h), Ok(true));
        assert_eq!(verify("px", &h), Ok(false));
        let b = bcrypt::hash("pw", 4).expect("bcrypt");
        assert_eq!(verify("pw", &format!("{{BLF-CRYPT}}{b}")), Ok(true));
        assert_eq!(verify("pw", "{PLAIN}pw"), Ok(true));
        assert_eq!(verify("pw", "{PLAIN}pW"), Ok(false));
        assert!(verify("pw", "{NOPE}x").is_err());
        let a = hash("ARGON2ID", "pw").expect("argon2");
        assert_eq!(verify("pw", &a), Ok(true));
        assert_eq!(verify("pX", &a), Ok(false));
        let sc = hash("SCRAM-SHA-256", "pw").expect("scram");
        assert!(sc.starts_with("{SCRAM-SHA-256}4096,"));
        assert_eq!(verify("pw", &sc), Ok(true));
        assert_eq!(verify("pX", &sc), Ok(false));
        assert_eq!(plaintext("{PLAIN}pw"), Some("pw"));
        assert_eq!(scram_salt("alice"), scram_salt("alice"));
        assert_ne!(scram_salt("alice"), scram_salt("bob"));
        assert_eq!(plaintext(&sc), None);
    }

    #[test]
    fn digests() {
        // RFC 7677 section 3's example: SaltedPassword for "pencil".
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("b64");
        let k = ScramKeys::derive("pencil", salt, 4096);
        let back = ScramKeys::parse(k.to_stored().trim_start_matches("{SCRAM-SHA-256}"));
        assert_eq!(back.as_ref(), Some(&k));
        let am = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                  r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                  c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let salted = hi(b"pencil", &k.salt, 4096);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let sig = hmac_sha256(&k.stored_key, am.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        assert_eq!(
            b64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            b64.encode(hmac_sha256(&k.server_key, am.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // RFC 2195's example.
        assert_eq!(
            hmac_md5_hex(
                b"tanstaaftanstaaf",
                b"<1896.697170952@postoffice.reston.mci.net>"
            ),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
        // RFC 1939's APOP example.
        assert_eq!(
            md5_hex(b"<1896.697170952@dbc.mtview.ca.us>tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }
}
