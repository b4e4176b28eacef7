//! The client against a real MariaDB (Debian's `mariadb-server`), started here on a Unix
//! socket and a loopback port in a temporary directory and stopped by pid. Skipped (with
//! a note) when `mariadbd` is not installed; CI installs it (scripts/install-test-deps.sh).

use oxipost_mysqlwire::proto::cap;
use oxipost_mysqlwire::{Conn, Endpoint, Error, Opts};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    sock: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM by pid, then wait; SIGKILL if it does not go within 30 s.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_mariadbd() -> Option<PathBuf> {
    ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn start(mariadbd: &Path) -> Server {
    let dir = tempfile::Builder::new()
        .prefix("mysqlwire-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let root = nix_is_root();
    if root {
        let ok = Command::new("chown")
            .args(["mysql:mysql"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown mysql");
    }
    let data = dir.path().join("data");
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if root {
        install.arg("--user=mysql");
    }
    assert!(
        install.status().is_ok_and(|s| s.success()),
        "mariadb-install-db"
    );
    let sock = dir.path().join("sock");
    let port = free_port();
    let mut cmd = Command::new(mariadbd);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", sock.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--pid-file={}/pid", dir.path().display()))
        .arg(format!("--log-error={}/error.log", dir.path().display()))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=16M",
            "--performance-schema=OFF",
            "--max-allowed-packet=64M",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if root {
        cmd.arg("--user=mysql");
    }
    let child = cmd.spawn().expect("spawn mariadbd");
    let mut server = Server {
        child,
        sock,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if server.sock.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        assert!(
            !matches!(server.child.try_wait(), Ok(Some(_))),
            "mariadbd exited"
        );
        assert!(Instant::now() < deadline, "mariadbd did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn text(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

#[test]
fn against_mariadb() {
    let Some(mariadbd) = find_mariadbd() else {
        eprintln!("mariadbd is not installed: skipped (scripts/install-test-deps.sh)");
        return;
    };
    let srv = start(&mariadbd);
    // root over the socket with an empty password (an empty scramble).
    let root = Opts::new(Endpoint::Unix(srv.sock.clone()), "root", "", "");
    let mut c = Conn::connect(&root).expect("root login");
    assert!(
        c.server_version().contains("MariaDB"),
        "{}",
        c.server_version()
    );
    for sql in [
        "CREATE DATABASE t",
        "CREATE USER 'w'@'127.0.0.1' IDENTIFIED BY 'p\\'w\"x'",
        "GRANT SELECT ON t.* TO 'w'@'127.0.0.1'",
        "CREATE TABLE t.kv (k VARCHAR(50), v TEXT)",
        "INSERT INTO t.kv VALUES ('a', 'one'), ('b', NULL), ('c', '')",
    ] {
        c.query(sql).expect(sql);
    }
    let ok = c
        .query("INSERT INTO t.kv VALUES ('d', 'x'), ('e', 'y')")
        .expect("insert");
    assert_eq!(ok.affected_rows, 2);
    let id = c.query("SELECT CONNECTION_ID()").expect("id").rows[0][0].clone();
    let id = text(&id).unwrap_or_default();

    // A user with a password over TCP, with and without CLIENT_DEPRECATE_EOF.
    let tcp = Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port: srv.port,
    };
    for deprecate_eof in [true, false] {
        let mut o = Opts::new(tcp.clone(), "w", "p'w\"x", "t");
        o.deprecate_eof = deprecate_eof;
        let mut w = Conn::connect(&o).expect("w login");
        assert_eq!(
            w.capabilities() & cap::DEPRECATE_EOF != 0,
            deprecate_eof,
            "negotiated DEPRECATE_EOF"
        );
        let rs = w.query("SELECT k, v FROM kv ORDER BY k").expect("select");
        let names: Vec<&str> = rs.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["k", "v"]);
        let rows: Vec<(Option<String>, Option<String>)> =
            rs.rows.iter().map(|r| (text(&r[0]), text(&r[1]))).collect();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0], (Some("a".into()), Some("one".into())));
        assert_eq!(rows[1], (Some("b".into()), None));
        assert_eq!(rows[2], (Some("c".into()), Some(String::new())));
        // An empty result, then a statement error: the connection stays usable.
        assert!(
            w.query("SELECT v FROM kv WHERE k = 'zz'")
                .expect("empty")
                .rows
                .is_empty()
        );
        match w.query("SELECT nope FROM kv") {
            Err(Error::Server { code: 1054, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!w.is_broken());
        match w.query("INSERT INTO kv VALUES ('x', 'y')") {
            Err(Error::Server { code: 1142, .. }) => {}
            other => panic!("{other:?}"),
        }
        w.ping().expect("ping");
        // A row larger than one 16 MB packet arrives split and is joined.
        let big = w.query("SELECT REPEAT('x', 16777300)").expect("big row");
        assert_eq!(big.rows[0][0].as_ref().map(Vec::len), Some(16_777_300));
        // NO_BACKSLASH_ESCAPES from the status flags: escaping follows it.
        let tricky = "o'ne\\il\"\n";
        let q = format!("SELECT '{}'", w.escape(tricky));
        assert_eq!(
            text(&w.query(&q).expect("escaped").rows[0][0]).as_deref(),
            Some(tricky)
        );
        w.query("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
            .expect("mode");
        let q = format!("SELECT '{}'", w.escape(tricky));
        assert!(q.contains("o''ne\\il"), "{q}");
        assert_eq!(
            text(&w.query(&q).expect("escaped").rows[0][0]).as_deref(),
            Some(tricky)
        );
        w.close();
    }

    // Refused logins are server errors with the server's text; never the password.
    let bad = Opts::new(tcp.clone(), "w", "wrong-password", "t");
    match Conn::connect(&bad) {
        Err(e @ Error::Server { code: 1045, .. }) => {
            assert!(!e.to_string().contains("wrong-password"), "{e}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("wrong password accepted"),
    }
    match Conn::connect(&Opts::new(tcp.clone(), "w", "p'w\"x", "nodb")) {
        Err(Error::Server { code: 1044, .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("database without grant accepted"),
    }

    // A connection killed by the server is broken at its next use.
    let mut victim = Conn::connect(&Opts::new(tcp.clone(), "w", "p'w\"x", "t")).expect("login");
    let vid = victim.query("SELECT CONNECTION_ID()").expect("id").rows[0][0].clone();
    let vid = text(&vid).unwrap_or_default();
    assert_ne!(vid, id);
    c.query(&format!("KILL {vid}")).expect("kill");
    let e = victim.query("SELECT 1").expect_err("killed");
    assert!(e.is_broken() || victim.is_broken(), "{e}");
    assert!(victim.query("SELECT 1").is_err());
    c.close();

    // Nothing listening: an I/O error.
    drop(srv);
    let down = Conn::connect(&Opts::new(tcp, "w", "x", "t"));
    assert!(matches!(down, Err(Error::Io(_))));
}
