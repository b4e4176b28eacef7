//! Dovecot password schemes: a stored password is `{SCHEME}data`; without a prefix it is
//! `CRYPT` (the host's crypt(3)), as Dovecot's default. `SHA512-CRYPT` and `SHA256-CRYPT`
//! (sha-crypt), `BLF-CRYPT` (bcrypt), `ARGON2ID`/`ARGON2I` (argon2), `CRYPT` (libcrypt, so
//! also yescrypt) and `PLAIN`/`CLEARTEXT` (tests; CRAM-MD5 would need these).

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
        other => return Err(UnknownScheme(other.to_owned())),
    })
}

/// True when the scheme stores the password itself (CRAM-MD5 and SCRAM derivation need it).
pub fn is_plain(stored: &str) -> bool {
    matches!(split(stored).0.as_str(), "PLAIN" | "CLEARTEXT")
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
/// `ARGON2ID` or `PLAIN`.
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
    }
}
