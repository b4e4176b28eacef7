//! The host's `crypt(3)` through libxcrypt (`crypt_ra`, reentrant), so that every hash the
//! system writes — Debian 12's default yescrypt `$y$`, `$6$`, `$5$`, `$2b$`, ... — verifies
//! exactly as `login` would.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

#[link(name = "crypt")]
unsafe extern "C" {
    fn crypt_ra(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut *mut c_void,
        size: *mut c_int,
    ) -> *mut c_char;
}

/// `crypt(password, setting)`; None when the host does not know the method.
pub fn crypt(password: &str, setting: &str) -> Option<String> {
    let phrase = CString::new(password).ok()?;
    let setting = CString::new(setting).ok()?;
    let mut data: *mut c_void = std::ptr::null_mut();
    let mut size: c_int = 0;
    // SAFETY: both strings are NUL-terminated and outlive the call; crypt_ra allocates
    // `data` itself (freed below) and returns a pointer into it or NULL.
    let out = unsafe { crypt_ra(phrase.as_ptr(), setting.as_ptr(), &mut data, &mut size) };
    let result = if out.is_null() {
        None
    } else {
        // SAFETY: a non-NULL result is a NUL-terminated string inside `data`.
        let s = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // Failure is reported as a string starting with '*'.
        (!s.starts_with('*')).then_some(s)
    };
    if !data.is_null() {
        // SAFETY: allocated by crypt_ra with malloc; not used after this.
        unsafe { libc::free(data) };
    }
    result
}

/// Compares in time independent of where the strings differ.
pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when `password` matches the system hash `hash`.
pub fn verify(password: &str, hash: &str) -> bool {
    if hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
        return false;
    }
    crypt(password, hash).is_some_and(|h| constant_eq(h.as_bytes(), hash.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha512_and_yescrypt() {
        let h = crypt("secret", "$6$saltsalt$").expect("sha512-crypt");
        assert!(verify("secret", &h));
        assert!(!verify("wrong", &h));
        // yescrypt, as Debian 12's passwd writes it.
        if let Some(y) = crypt("secret", "$y$j9T$abcdefghijklmnopqrstuv$") {
            assert!(verify("secret", &y));
            assert!(!verify("Secret", &y));
        }
        assert!(!verify("x", "!"));
        assert!(!verify("x", ""));
    }
}
