//! Packets of the connection phase and of `COM_QUERY`, as pure builders and parsers, and
//! the password scrambles of the authentication plugins.

use crate::Error;
use crate::packet::{Reader, put_lenenc_bytes};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Capability flags (the subset this client knows).
pub mod cap {
    pub const LONG_PASSWORD: u32 = 0x1;
    pub const FOUND_ROWS: u32 = 0x2;
    pub const LONG_FLAG: u32 = 0x4;
    pub const CONNECT_WITH_DB: u32 = 0x8;
    pub const LOCAL_FILES: u32 = 0x80;
    pub const PROTOCOL_41: u32 = 0x200;
    pub const SSL: u32 = 0x800;
    pub const TRANSACTIONS: u32 = 0x2000;
    pub const SECURE_CONNECTION: u32 = 0x8000;
    pub const MULTI_STATEMENTS: u32 = 0x1_0000;
    pub const MULTI_RESULTS: u32 = 0x2_0000;
    pub const PLUGIN_AUTH: u32 = 0x8_0000;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
    pub const DEPRECATE_EOF: u32 = 0x100_0000;
}

/// Server status flags in OK/EOF packets.
pub mod status {
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const NO_BACKSLASH_ESCAPES: u16 = 0x0200;
}

pub const COM_QUIT: u8 = 0x01;
pub const COM_QUERY: u8 = 0x03;
pub const COM_PING: u8 = 0x0e;

/// utf8mb4_general_ci.
pub const CHARSET_UTF8MB4: u8 = 45;

/// What this client asks for (before intersecting with the server's flags).
pub const CLIENT_CAPS: u32 = cap::LONG_PASSWORD
    | cap::LONG_FLAG
    | cap::PROTOCOL_41
    | cap::TRANSACTIONS
    | cap::SECURE_CONNECTION
    | cap::PLUGIN_AUTH
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// The server's first packet (Handshake v10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub server_version: String,
    pub connection_id: u32,
    pub capabilities: u32,
    pub status: u16,
    /// The scramble (nonce), 20 bytes for the usual plugins.
    pub nonce: Vec<u8>,
    pub plugin: String,
}

/// Parses the initial handshake; an `ERR` packet here (too many connections, host
/// blocked) is returned as the server's error.
pub fn parse_handshake(p: &[u8]) -> Result<Handshake, Error> {
    if p.first() == Some(&0xff) {
        return Err(parse_err(p));
    }
    let mut r = Reader::new(p);
    let version = r.u8()?;
    if version != 10 {
        return Err(Error::Protocol(format!(
            "handshake protocol version {version} (only 10 is supported)"
        )));
    }
    let server_version = String::from_utf8_lossy(r.null_str()).into_owned();
    let connection_id = r.u32()?;
    let mut nonce = r.bytes(8)?.to_vec();
    r.u8()?;
    let mut capabilities = u32::from(r.u16()?);
    let mut status = 0;
    let mut plugin = String::new();
    if !r.is_empty() {
        r.u8()?; // character set
        status = r.u16()?;
        capabilities |= u32::from(r.u16()?) << 16;
        let data_len = usize::from(r.u8()?);
        r.bytes(10)?; // reserved (MariaDB's extended capabilities in the last 4)
        if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = data_len.saturating_sub(8).max(13).min(r.remaining());
            let part2 = r.bytes(n)?;
            // The second part ends with a NUL that is not part of the scramble.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            nonce.extend_from_slice(part2);
        }
        if capabilities & cap::PLUGIN_AUTH != 0 {
            plugin = String::from_utf8_lossy(r.null_str()).into_owned();
        }
    }
    if capabilities & cap::PROTOCOL_41 == 0 {
        return Err(Error::Protocol("server does not speak protocol 4.1".into()));
    }
    if plugin.is_empty() {
        plugin = "mysql_native_password".into();
    }
    Ok(Handshake {
        server_version,
        connection_id,
        capabilities,
        status,
        nonce,
        plugin,
    })
}

/// `mysql_native_password`: SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))).
/// An empty password sends an empty response.
pub fn scramble_native(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha1::digest(password);
    let h2 = Sha1::digest(h1);
    let mut h = Sha1::new();
    h.update(&nonce[..nonce.len().min(20)]);
    h.update(h2);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// `caching_sha2_password`: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce).
pub fn scramble_caching_sha2(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha256::digest(password);
    let h2 = Sha256::digest(h1);
    let mut h = Sha256::new();
    h.update(h2);
    h.update(&nonce[..nonce.len().min(20)]);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// The first answer of `plugin` to `nonce`; `secure` says the transport may carry a
/// password in clear (a Unix socket). `None`: a plugin this client does not support.
pub fn auth_response(plugin: &str, password: &[u8], nonce: &[u8], secure: bool) -> Option<Vec<u8>> {
    match plugin {
        "mysql_native_password" => Some(scramble_native(password, nonce)),
        "caching_sha2_password" => Some(scramble_caching_sha2(password, nonce)),
        "mysql_clear_password" if secure => {
            let mut v = password.to_vec();
            v.push(0);
            Some(v)
        }
        _ => None,
    }
}

/// `HandshakeResponse41`.
pub fn handshake_response(
    caps: u32,
    user: &str,
    auth: &[u8],
    db: &str,
    plugin: &str,
    max_packet: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + user.len() + db.len() + auth.len());
    out.extend_from_slice(&caps.to_le_bytes());
    out.extend_from_slice(&max_packet.to_le_bytes());
    out.push(CHARSET_UTF8MB4);
    out.extend_from_slice(&[0u8; 23]);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    if caps & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        put_lenenc_bytes(&mut out, auth);
    } else {
        out.push(auth.len().min(255) as u8);
        out.extend_from_slice(&auth[..auth.len().min(255)]);
    }
    if caps & cap::CONNECT_WITH_DB != 0 {
        out.extend_from_slice(db.as_bytes());
        out.push(0);
    }
    if caps & cap::PLUGIN_AUTH != 0 {
        out.extend_from_slice(plugin.as_bytes());
        out.push(0);
    }
    out
}

/// What the server answered during authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    Ok(OkPacket),
    /// Auth switch request: use this plugin with this nonce.
    Switch {
        plugin: String,
        nonce: Vec<u8>,
    },
    /// Auth more data (`0x01`), for the current plugin.
    More(Vec<u8>),
}

pub fn parse_auth_reply(p: &[u8], caps: u32) -> Result<AuthReply, Error> {
    match p.first() {
        Some(0x00) => Ok(AuthReply::Ok(parse_ok(p, caps)?)),
        Some(0xff) => Err(parse_err(p)),
        Some(0xfe) if p.len() == 1 => Err(Error::Protocol(
            "server asks for the old (pre-4.1) password protocol".into(),
        )),
        Some(0xfe) => {
            let mut r = Reader::new(&p[1..]);
            let plugin = String::from_utf8_lossy(r.null_str()).into_owned();
            let data = r.rest();
            let nonce = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
            Ok(AuthReply::Switch { plugin, nonce })
        }
        Some(0x01) => Ok(AuthReply::More(p[1..].to_vec())),
        _ => Err(Error::Protocol(
            "unexpected packet during authentication".into(),
        )),
    }
}

/// An OK packet (or an EOF packet, whose fields are a subset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// Parses an OK packet (header 0x00, or 0xfe when it ends a result set with
/// `CLIENT_DEPRECATE_EOF`).
pub fn parse_ok(p: &[u8], _caps: u32) -> Result<OkPacket, Error> {
    let mut r = Reader::new(p);
    r.u8()?;
    let affected_rows = r.lenenc_int()?.unwrap_or(0);
    let last_insert_id = r.lenenc_int()?.unwrap_or(0);
    let (status, warnings) = if r.remaining() >= 4 {
        (r.u16()?, r.u16()?)
    } else {
        (0, 0)
    };
    Ok(OkPacket {
        affected_rows,
        last_insert_id,
        status,
        warnings,
    })
}

/// Parses an EOF packet (0xfe, fewer than 9 bytes).
pub fn parse_eof(p: &[u8]) -> Result<OkPacket, Error> {
    let mut r = Reader::new(p);
    r.u8()?;
    let (warnings, status) = if r.remaining() >= 4 {
        (r.u16()?, r.u16()?)
    } else {
        (0, 0)
    };
    Ok(OkPacket {
        status,
        warnings,
        ..OkPacket::default()
    })
}

/// Whether a packet in the row stream ends it (EOF, or OK with `CLIENT_DEPRECATE_EOF`).
/// A row starting with 0xfe is an 8-byte length, so such a row is at least 9 bytes long.
pub fn is_end_of_rows(p: &[u8], caps: u32) -> bool {
    p.first() == Some(&0xfe)
        && if caps & cap::DEPRECATE_EOF != 0 {
            p.len() < crate::packet::MAX_CHUNK
        } else {
            p.len() < 9
        }
}

/// An ERR packet as an error. The message is the server's (it never holds the password).
pub fn parse_err(p: &[u8]) -> Error {
    let mut r = Reader::new(p);
    let _ = r.u8();
    let code = r.u16().unwrap_or(0);
    let mut state = String::new();
    if r.peek() == Some(b'#') {
        let _ = r.u8();
        if let Ok(s) = r.bytes(5) {
            state = String::from_utf8_lossy(s).into_owned();
        }
    }
    Error::Server {
        code,
        state,
        message: String::from_utf8_lossy(r.rest()).into_owned(),
    }
}

/// A column definition (`ColumnDefinition41`), the parts a caller may want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub table: String,
    pub column_type: u8,
}

pub fn parse_column(p: &[u8]) -> Result<Column, Error> {
    let mut r = Reader::new(p);
    let mut s = || -> Result<String, Error> {
        Ok(String::from_utf8_lossy(r.lenenc_bytes()?.unwrap_or_default()).into_owned())
    };
    let _catalog = s()?;
    let _schema = s()?;
    let table = s()?;
    let _org_table = s()?;
    let name = s()?;
    let _org_name = s()?;
    r.lenenc_int()?; // length of the fixed fields (0x0c)
    r.u16()?; // character set
    r.u32()?; // column length
    let column_type = r.u8()?;
    Ok(Column {
        name,
        table,
        column_type,
    })
}

/// A text-protocol row: `n` length-encoded strings, 0xfb for NULL.
pub fn parse_row(p: &[u8], n: usize) -> Result<Vec<Option<Vec<u8>>>, Error> {
    let mut r = Reader::new(p);
    let mut row = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        row.push(r.lenenc_bytes()?.map(<[u8]>::to_vec));
    }
    if !r.is_empty() {
        return Err(Error::Protocol("trailing bytes after a row".into()));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn native_password_vector() {
        // The server stores SHA1(SHA1(password)): the well-known
        // *2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19 for "password".
        let h2 = Sha1::digest(Sha1::digest(b"password"));
        assert_eq!(hex(&h2), "2470c0c06dee42fd1618bb99005adca2ec9d1e19");
        // The scramble for a fixed nonce (vector computed independently with Python's
        // hashlib), and checked the way the server checks it:
        // SHA1(scramble XOR SHA1(nonce + stored)) == stored.
        let nonce = b"12345678901234567890";
        let s = scramble_native(b"password", nonce);
        assert_eq!(s.len(), 20);
        assert_eq!(hex(&s), "1957dce2724282e018f40d905824cb6361f88d41");
        let mut h = Sha1::new();
        h.update(nonce);
        h.update(h2);
        let x: Vec<u8> = s
            .iter()
            .zip(h.finalize().iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(Sha1::digest(&x).as_slice(), h2.as_slice());
        assert!(scramble_native(b"", nonce).is_empty());
        // caching_sha2: XOR with the same digest gives SHA256(password) back.
        let c = scramble_caching_sha2(b"password", nonce);
        let mut h = Sha256::new();
        h.update(Sha256::digest(Sha256::digest(b"password")));
        h.update(nonce);
        let back: Vec<u8> = c
            .iter()
            .zip(h.finalize().iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(back, Sha256::digest(b"password").to_vec());
    }

    fn mariadb_handshake() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        let caps: u32 = 0xf7fe | (0x81bf << 16);
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn handshake_parse_and_response() {
        let h = parse_handshake(&mariadb_handshake()).expect("parse");
        assert_eq!(h.nonce, b"abcdefghijklmnopqrst");
        assert_eq!(h.plugin, "mysql_native_password");
        assert_eq!(h.connection_id, 7);
        assert!(h.capabilities & cap::PLUGIN_AUTH != 0);
        assert_eq!(h.status, 2);
        // Truncated handshakes are errors, never panics.
        let full = mariadb_handshake();
        for n in 0..full.len() - 25 {
            let _ = parse_handshake(&full[..n]);
        }
        let mut err = vec![0xff, 0x10, 0x04];
        err.extend_from_slice(b"Too many connections");
        assert!(matches!(
            parse_handshake(&err),
            Err(Error::Server { code: 1040, .. })
        ));
        let caps = CLIENT_CAPS | cap::CONNECT_WITH_DB;
        let resp = handshake_response(caps, "u", &[1, 2], "db", "mysql_native_password", 1 << 24);
        assert_eq!(&resp[..4], &caps.to_le_bytes());
        assert_eq!(&resp[32..], b"u\0\x02\x01\x02db\0mysql_native_password\0");
    }

    #[test]
    fn replies() {
        let ok = [0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00];
        assert_eq!(
            parse_auth_reply(&ok, CLIENT_CAPS).ok(),
            Some(AuthReply::Ok(OkPacket {
                affected_rows: 1,
                status: 2,
                ..OkPacket::default()
            }))
        );
        let sw = b"\xfemysql_native_password\x00abcdefghijklmnopqrst\x00";
        assert_eq!(
            parse_auth_reply(sw, CLIENT_CAPS).ok(),
            Some(AuthReply::Switch {
                plugin: "mysql_native_password".into(),
                nonce: b"abcdefghijklmnopqrst".to_vec()
            })
        );
        assert_eq!(
            parse_auth_reply(&[0x01, 0x03], CLIENT_CAPS).ok(),
            Some(AuthReply::More(vec![3]))
        );
        let err = b"\xff\x15\x04#28000Access denied for user 'x'@'localhost'";
        match parse_auth_reply(err, CLIENT_CAPS) {
            Err(Error::Server {
                code,
                state,
                message,
            }) => {
                assert_eq!((code, state.as_str()), (1045, "28000"));
                assert!(message.starts_with("Access denied"));
            }
            other => panic!("{other:?}"),
        }
        assert!(is_end_of_rows(&[0xfe, 0, 0, 2, 0], 0));
        assert!(!is_end_of_rows(&[0xfe, 1, 0, 0, 0, 0, 0, 0, 0, b'x'], 0));
        assert!(is_end_of_rows(
            &[0xfe, 0, 0, 2, 0, 0, 0],
            cap::DEPRECATE_EOF
        ));
    }

    #[test]
    fn columns_and_rows() {
        let mut c = Vec::new();
        for s in ["def", "db", "t", "t", "goto", "goto"] {
            put_lenenc_bytes(&mut c, s.as_bytes());
        }
        c.extend_from_slice(&[0x0c, 45, 0, 0, 1, 0, 0, 253, 0, 0, 0, 0, 0]);
        let col = parse_column(&c).expect("column");
        assert_eq!((col.name.as_str(), col.column_type), ("goto", 253));
        let row = [3, b'a', b'b', b'c', 0xfb, 0];
        assert_eq!(
            parse_row(&row, 3).ok(),
            Some(vec![Some(b"abc".to_vec()), None, Some(Vec::new())])
        );
        assert!(parse_row(&row, 4).is_err());
        assert!(parse_row(&row, 2).is_err());
    }
}
