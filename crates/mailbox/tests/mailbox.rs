//! Integration tests of oxipost-mailbox on real temporary directories. Where python3 is
//! installed, its `mailbox` module reads what we wrote as an independent check.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use oxipost_mailbox::{
    ChunkReader, DeliverOptions, Error, LockConfig, LockMethod, MailboxLock, Maildir, MaildirBatch,
    MboxOptions, Subdir, deliver_mbox, parse_mbox, unquote_from,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

// ---------- fixtures ----------

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!("From: a@example.com\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\n{body}")
        .into_bytes()
}

/// What a delivery of `message()` with `headers` should store: LF line ends.
fn stored(headers: &[&str], content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.push(b'\n');
    }
    let text = String::from_utf8_lossy(content).replace("\r\n", "\n");
    out.extend_from_slice(text.as_bytes());
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    }
}

/// A reader that yields `ok_bytes` of data and then fails, like a queue file read error.
struct FailingReader {
    left: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("simulated read failure"));
        }
        let n = self.left.min(buf.len()).min(1000);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = if i % 50 == 49 { b'\n' } else { b'x' };
        }
        self.left -= n;
        Ok(n)
    }
}

fn fast_locks(methods: Vec<LockMethod>) -> LockConfig {
    LockConfig {
        methods,
        attempts: 5000,
        delay: Duration::from_millis(2),
        stale_time: Duration::from_secs(500),
        dotlock_may_fail: false,
    }
}

/// Runs a python3 script with arguments; `None` (with a message) when python3 is missing.
fn python(script: &str, args: &[&str]) -> Option<Result<Vec<u8>, String>> {
    let probe = Command::new("python3")
        .args(["-c", "import mailbox"])
        .output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        println!("python3 with the mailbox module is not available: skipping the Python check");
        return None;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output();
    Some(match out {
        Ok(o) if o.status.success() => Ok(o.stdout),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => Err(e.to_string()),
    })
}

// ---------- Maildir ----------

#[test]
fn maildir_round_trip_byte_for_byte() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let md = Maildir::new(tmp.path().join("Maildir"));
    let headers = [
        "Return-Path: <a@example.com>",
        "Delivered-To: b@example.com",
    ];
    let content = message(
        "round trip",
        "line 1\r\nFrom here\r\nbare\rcr\r\nno final newline",
    );
    let opts = DeliverOptions {
        size_in_name: true,
        size_limit: None,
    };
    let d = md.deliver(&headers, &content[..], &opts)?;

    let expected = stored(&headers, &content);
    assert_eq!(fs::read(&d.path)?, expected);
    assert_eq!(d.size, expected.len() as u64);
    assert!(d.path.starts_with(md.subdir("new")));
    let name = d.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(name.ends_with(&format!(",S={}", expected.len())), "{name}");
    assert!(name.contains('M') && name.contains('P') && name.contains('Q'));
    assert!(dir_entries(&md.subdir("tmp")).is_empty());

    // The Maildir was created with mode 0700.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(md.path())?.permissions().mode() & 0o777, 0o700);
    for sub in ["tmp", "new", "cur"] {
        assert_eq!(
            fs::metadata(md.subdir(sub))?.permissions().mode() & 0o777,
            0o700
        );
    }

    // Reading side: listed in new/, moved to cur/, flags set and parsed.
    let list = md.list()?;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].subdir, Subdir::New);
    assert_eq!(list[0].size, Some(expected.len() as u64));
    let cur = md.move_to_cur(&list[0])?;
    assert_eq!(cur.subdir, Subdir::Cur);
    let flagged = md.set_flags(&cur, "SR")?;
    let again = md.list()?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].flags, "RS");
    assert!(again[0].has_flag('S'));
    assert_eq!(again[0].unique, list[0].unique);
    assert_eq!(fs::read(&flagged.path)?, expected);

    // Python's mailbox module reads the same bytes.
    let script = "import mailbox,sys\n\
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)\n\
keys = md.keys()\n\
assert len(keys) == 1, keys\n\
m = md.get_message(keys[0])\n\
assert 'S' in m.get_flags() and 'R' in m.get_flags(), m.get_flags()\n\
sys.stdout.buffer.write(md.get_bytes(keys[0]))\n";
    let root = md.path().to_string_lossy().into_owned();
    if let Some(r) = python(script, &[&root]) {
        assert_eq!(r?, expected);
    }
    Ok(())
}

#[test]
fn maildir_accepts_chunks_and_many_messages_python_reads_them() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let md = Maildir::new(tmp.path().join("Maildir"));
    for i in 0..5 {
        let chunks: Vec<io::Result<Vec<u8>>> = vec![
            Ok(b"Subject: chunk ".to_vec()),
            Ok(format!("{i}\r").into_bytes()),
            Ok(b"\n\r\nbody\r\n".to_vec()),
        ];
        md.deliver(&[], ChunkReader::new(chunks), &DeliverOptions::default())?;
    }
    let list = md.list()?;
    assert_eq!(list.len(), 5);
    let mut subjects = BTreeSet::new();
    for e in &list {
        let text = fs::read_to_string(&e.path)?;
        assert!(!text.contains('\r'));
        subjects.insert(text.lines().next().unwrap_or("").to_string());
    }
    assert_eq!(subjects.len(), 5);

    let folder = md.create_folder("Lists.rust")?;
    assert!(folder.path().join("maildirfolder").exists());
    assert_eq!(md.folders()?, vec!["Lists.rust".to_string()]);

    let script = "import mailbox,sys\n\
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)\n\
print(sorted(m['Subject'] for m in md))\n\
print(md.list_folders())\n";
    let root = md.path().to_string_lossy().into_owned();
    if let Some(r) = python(script, &[&root]) {
        let out = String::from_utf8(r?)?;
        assert_eq!(
            out,
            "['chunk 0', 'chunk 1', 'chunk 2', 'chunk 3', 'chunk 4']\n['Lists.rust']\n"
        );
    }
    Ok(())
}

#[test]
fn maildir_unique_names_under_concurrent_delivery() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let md = Arc::new(Maildir::new(tmp.path().join("Maildir")));
    let threads = 16;
    let per_thread = 25;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let md = Arc::clone(&md);
            thread::spawn(move || -> Result<Vec<PathBuf>, Error> {
                let mut paths = Vec::new();
                for i in 0..per_thread {
                    let body = message(&format!("t{t} m{i}"), "hello\r\n");
                    paths.push(md.deliver(&[], &body[..], &DeliverOptions::default())?.path);
                }
                Ok(paths)
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for h in handles {
        let paths = h.join().map_err(|_| "thread panicked")??;
        all.extend(paths);
    }
    assert_eq!(all.len(), threads * per_thread);
    assert_eq!(dir_entries(&md.subdir("new")).len(), threads * per_thread);
    assert!(dir_entries(&md.subdir("tmp")).is_empty());
    let subjects: BTreeSet<String> = md
        .list()?
        .iter()
        .filter_map(|e| fs::read_to_string(&e.path).ok())
        .filter_map(|t| {
            t.lines()
                .find(|l| l.starts_with("Subject:"))
                .map(String::from)
        })
        .collect();
    assert_eq!(subjects.len(), threads * per_thread);
    Ok(())
}

#[test]
fn maildir_size_limit_leaves_nothing_behind() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let md = Maildir::new(tmp.path().join("Maildir"));
    let big = message("big", &"x".repeat(200_000));
    let opts = DeliverOptions {
        size_in_name: false,
        size_limit: Some(100_000),
    };
    let err = match md.deliver(&["Delivered-To: b@example.com"], &big[..], &opts) {
        Ok(d) => return Err(format!("delivered {:?} despite the limit", d.path).into()),
        Err(e) => e,
    };
    assert!(matches!(err, Error::SizeLimit { limit: 100_000 }), "{err}");
    assert!(err.is_temporary());
    assert!(err.is_full());
    assert!(dir_entries(&md.subdir("tmp")).is_empty());
    assert!(dir_entries(&md.subdir("new")).is_empty());

    // Exactly at the limit is fine.
    let small = b"Subject: s\n\n12345\n";
    let exact = DeliverOptions {
        size_in_name: false,
        size_limit: Some(small.len() as u64),
    };
    md.deliver(&[], &small[..], &exact)?;
    Ok(())
}

#[test]
fn maildir_read_failure_leaves_nothing_behind() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let md = Maildir::new(tmp.path().join("Maildir"));
    let err = md
        .deliver(
            &["Delivered-To: b@example.com"],
            FailingReader { left: 300_000 },
            &DeliverOptions::default(),
        )
        .err()
        .ok_or("delivery should fail")?;
    assert!(matches!(err, Error::Source(_)), "{err}");
    assert!(err.is_temporary());
    assert!(dir_entries(&md.subdir("tmp")).is_empty());
    assert!(dir_entries(&md.subdir("new")).is_empty());

    let chunks: Vec<io::Result<&[u8]>> = vec![Ok(b"Subject: x\n"), Err(io::Error::other("boom"))];
    assert!(
        md.deliver(&[], ChunkReader::new(chunks), &DeliverOptions::default())
            .is_err()
    );
    assert!(dir_entries(&md.subdir("tmp")).is_empty());
    assert!(dir_entries(&md.subdir("new")).is_empty());

    // Header lines cannot smuggle extra lines in.
    assert!(matches!(
        md.deliver(&["X: a\nY: b"], &b"x"[..], &DeliverOptions::default()),
        Err(Error::Invalid(_))
    ));
    Ok(())
}

#[test]
fn maildir_batch_group_commit() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let a = Maildir::new(tmp.path().join("a/Maildir"));
    let b = Maildir::new(tmp.path().join("b/Maildir"));
    let mut batch = MaildirBatch::new();
    let m1 = message("one", "1\r\n");
    let m2 = message("two", "2\r\n");
    let m3 = message("three", "3\r\n");
    assert_eq!(
        batch.stage(&a, &[], &m1[..], &DeliverOptions::default())?,
        0
    );
    assert_eq!(
        batch.stage(&b, &[], &m2[..], &DeliverOptions::default())?,
        1
    );
    assert_eq!(
        batch.stage(&a, &[], &m3[..], &DeliverOptions::default())?,
        2
    );
    // Staged but not committed: invisible to readers.
    assert!(a.list()?.is_empty());
    assert_eq!(dir_entries(&a.subdir("tmp")).len(), 2);
    // A failing stage does not disturb the batch.
    assert!(
        batch
            .stage(
                &a,
                &[],
                FailingReader { left: 10 },
                &DeliverOptions::default()
            )
            .is_err()
    );
    assert_eq!(batch.len(), 3);

    let results = batch.commit();
    assert_eq!(results.len(), 3);
    let mut paths = Vec::new();
    for r in results {
        paths.push(r?.path);
    }
    assert_eq!(fs::read(&paths[0])?, stored(&[], &m1));
    assert_eq!(fs::read(&paths[1])?, stored(&[], &m2));
    assert_eq!(fs::read(&paths[2])?, stored(&[], &m3));
    assert_eq!(a.list()?.len(), 2);
    assert_eq!(b.list()?.len(), 1);
    assert!(dir_entries(&a.subdir("tmp")).is_empty());

    // A batch dropped without commit cleans up its staged files.
    let mut dropped = MaildirBatch::new();
    dropped.stage(&a, &[], &m1[..], &DeliverOptions::default())?;
    drop(dropped);
    assert!(dir_entries(&a.subdir("tmp")).is_empty());
    assert_eq!(a.list()?.len(), 2);
    Ok(())
}

// ---------- mbox ----------

fn mbox_opts() -> MboxOptions {
    MboxOptions {
        lock: fast_locks(vec![LockMethod::Fcntl, LockMethod::Dotlock]),
        ..MboxOptions::default()
    }
}

#[test]
fn mbox_from_line_quoting_and_blank_line() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("user");
    let content = message(
        "q",
        "From the start\r\n>From already\r\nFromage\r\n\r\nFrom end",
    );
    let d = deliver_mbox(
        &path,
        "a@example.com",
        &["Return-Path: <a@example.com>"],
        &content[..],
        &mbox_opts(),
    )?;
    let data = fs::read(&path)?;
    assert_eq!(d.offset, 0);
    assert_eq!(d.len, data.len() as u64);
    let text = String::from_utf8(data)?;
    let (first, rest) = text.split_once('\n').ok_or("no From line")?;
    // "From sender  Www Mmm dd hh:mm:ss yyyy": two spaces, asctime() is 24 characters.
    let date = first
        .strip_prefix("From a@example.com  ")
        .ok_or("bad From line")?;
    assert_eq!(date.len(), 24, "{first:?}");
    assert_eq!(
        rest,
        "Return-Path: <a@example.com>\nFrom: a@example.com\nTo: b@example.com\nSubject: q\n\n\
>From the start\n>From already\nFromage\n\n>From end\n\n"
    );
    assert!(!DotLockPath::of(&path).exists());
    Ok(())
}

struct DotLockPath;
impl DotLockPath {
    fn of(path: &Path) -> PathBuf {
        oxipost_mailbox::DotLock::lock_path_for(path)
    }
}

#[test]
fn mbox_two_messages_parse_back() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("mbox");
    let m1 = message("first", "From me\r\nbye\r\n");
    let m2 = message("second", "two\r\n\r\n");
    let d1 = deliver_mbox(&path, "", &[], &m1[..], &mbox_opts())?;
    let d2 = deliver_mbox(&path, "x@y", &[], &m2[..], &mbox_opts())?;
    assert_eq!(d2.offset, d1.len);
    let data = fs::read(&path)?;
    let msgs = parse_mbox(&data);
    assert_eq!(msgs.len(), 2);
    assert!(data[msgs[0].from_line.clone()].starts_with(b"From MAILER-DAEMON  "));
    assert!(data[msgs[1].from_line.clone()].starts_with(b"From x@y  "));
    assert_eq!(
        unquote_from(&data[msgs[0].content.clone()]),
        stored(&[], &m1)
    );
    assert_eq!(
        unquote_from(&data[msgs[1].content.clone()]),
        stored(&[], &m2)
    );
    Ok(())
}

#[test]
fn mbox_concurrent_delivery_is_well_formed() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = Arc::new(tmp.path().join("shared"));
    let threads = 8;
    let per_thread = 15;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let path = Arc::clone(&path);
            thread::spawn(move || -> Result<(), Error> {
                // Half the threads use fcntl+dotlock, half flock+fcntl: all must exclude.
                let methods = if t % 2 == 0 {
                    vec![LockMethod::Fcntl, LockMethod::Dotlock]
                } else {
                    vec![LockMethod::Flock, LockMethod::Fcntl]
                };
                let opts = MboxOptions {
                    lock: fast_locks(methods),
                    ..MboxOptions::default()
                };
                for i in 0..per_thread {
                    let body = format!("From line {t}.{i}\r\n{}\r\n", "y".repeat(5000 + i * 97));
                    let m = message(&format!("t{t} m{i}"), &body);
                    deliver_mbox(&path, "s@example.com", &[], &m[..], &opts)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "thread panicked")??;
    }
    let data = fs::read(&*path)?;
    let msgs = parse_mbox(&data);
    assert_eq!(msgs.len(), threads * per_thread);
    let mut subjects = BTreeSet::new();
    for m in &msgs {
        let content = unquote_from(&data[m.content.clone()]);
        let text = String::from_utf8(content)?;
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .ok_or("no subject")?
            .to_string();
        let (t, i) = subject
            .strip_prefix('t')
            .and_then(|s| s.split_once(" m"))
            .ok_or("bad subject")?;
        let i: usize = i.parse()?;
        let expected = message(
            &subject,
            &format!("From line {t}.{i}\r\n{}\r\n", "y".repeat(5000 + i * 97)),
        );
        assert_eq!(text.as_bytes(), stored(&[], &expected));
        subjects.insert(subject);
    }
    assert_eq!(subjects.len(), threads * per_thread);

    let script = "import mailbox,sys\n\
mb = mailbox.mbox(sys.argv[1], create=False)\n\
subs = [m['Subject'] for m in mb]\n\
ok = all(m.get_payload().startswith('>From line ') for m in mb)\n\
print(len(subs), len(set(subs)), ok)\n";
    let p = path.to_string_lossy().into_owned();
    if let Some(r) = python(script, &[&p]) {
        assert_eq!(
            String::from_utf8(r?)?,
            format!("{} {} True\n", threads * per_thread, threads * per_thread)
        );
    }
    Ok(())
}

#[test]
fn mbox_failed_write_truncates_back() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("mbox");
    deliver_mbox(
        &path,
        "a@b",
        &[],
        &message("ok", "fine\r\n")[..],
        &mbox_opts(),
    )?;
    let before = fs::read(&path)?;

    let err = deliver_mbox(
        &path,
        "a@b",
        &[],
        FailingReader { left: 200_000 },
        &mbox_opts(),
    )
    .err()
    .ok_or("delivery should fail")?;
    assert!(matches!(err, Error::Source(_)), "{err}");
    assert_eq!(fs::read(&path)?, before);

    let limited = MboxOptions {
        mailbox_size_limit: Some(before.len() as u64 + 100),
        ..mbox_opts()
    };
    let big = message("big", &"z".repeat(1000));
    let err = deliver_mbox(&path, "a@b", &[], &big[..], &limited)
        .err()
        .ok_or("limit should apply")?;
    assert!(
        err.is_temporary() && matches!(err, Error::SizeLimit { .. }),
        "{err}"
    );
    assert_eq!(fs::read(&path)?, before);

    let limited = MboxOptions {
        message_size_limit: Some(500),
        ..mbox_opts()
    };
    assert!(deliver_mbox(&path, "a@b", &[], &big[..], &limited).is_err());
    assert_eq!(fs::read(&path)?, before);
    assert!(!DotLockPath::of(&path).exists());
    assert_eq!(parse_mbox(&fs::read(&path)?).len(), 1);
    Ok(())
}

#[test]
fn mbox_stale_dotlock_is_broken_fresh_one_is_not() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("mbox");
    let lock = DotLockPath::of(&path);
    fs::write(&lock, b"")?;

    // A fresh lock held by "someone else" makes delivery fail temporarily, lock untouched.
    let strict = MboxOptions {
        lock: LockConfig {
            methods: vec![LockMethod::Dotlock],
            attempts: 3,
            delay: Duration::from_millis(10),
            stale_time: Duration::from_secs(500),
            dotlock_may_fail: false,
        },
        ..MboxOptions::default()
    };
    let err = deliver_mbox(&path, "a@b", &[], &b"x\n"[..], &strict)
        .err()
        .ok_or("a fresh lock must block delivery")?;
    assert!(
        matches!(err, Error::Locked { .. }) && err.is_temporary(),
        "{err}"
    );
    assert!(lock.exists());

    // Once older than stale_lock_time, it is removed and delivery proceeds.
    thread::sleep(Duration::from_millis(300));
    let lenient = MboxOptions {
        lock: LockConfig {
            stale_time: Duration::from_millis(100),
            ..strict.lock.clone()
        },
        ..MboxOptions::default()
    };
    deliver_mbox(&path, "a@b", &[], &b"x\n"[..], &lenient)?;
    assert!(!lock.exists());
    assert_eq!(parse_mbox(&fs::read(&path)?).len(), 1);
    Ok(())
}

#[test]
fn mbox_kernel_locks_exclude_within_one_process() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("mbox");
    fs::write(&path, b"")?;
    for method in [LockMethod::Fcntl, LockMethod::Flock] {
        let holder = fs::OpenOptions::new().append(true).open(&path)?;
        let cfg = LockConfig {
            methods: vec![method],
            attempts: 2,
            delay: Duration::from_millis(10),
            ..LockConfig::default()
        };
        let held = MailboxLock::acquire(&holder, &path, &cfg)?;
        let err = deliver_mbox(
            &path,
            "a@b",
            &[],
            &b"x\n"[..],
            &MboxOptions {
                lock: cfg.clone(),
                ..MboxOptions::default()
            },
        )
        .err()
        .ok_or(format!("{} lock did not exclude", method.name()))?;
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(held);
        drop(holder);
        deliver_mbox(
            &path,
            "a@b",
            &[],
            &b"x\n"[..],
            &MboxOptions {
                lock: cfg,
                ..MboxOptions::default()
            },
        )?;
    }
    assert_eq!(parse_mbox(&fs::read(&path)?).len(), 2);
    Ok(())
}

#[test]
fn mbox_refuses_symlink() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let target = tmp.path().join("target");
    fs::write(&target, b"")?;
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&target, &link)?;
    let err = deliver_mbox(&link, "a@b", &[], &b"x\n"[..], &mbox_opts())
        .err()
        .ok_or("symlinked mailbox must be refused")?;
    assert!(!err.is_temporary(), "{err}");
    assert_eq!(fs::read(&target)?, b"");
    Ok(())
}

// ---------- real write failures (RLIMIT_FSIZE in a child process) ----------

const CHILD_ENV: &str = "OXIPOST_MAILBOX_FSIZE_CHILD";

/// Runs the named test again in a child process with `CHILD_ENV` set to `dir`.
fn run_in_child(test_name: &str, dir: &Path) -> TestResult {
    let out = Command::new(std::env::current_exe()?)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("CHILD-OK") {
        return Err(format!(
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// In the child: writes past `bytes` now fail with EFBIG instead of killing the process.
fn limit_file_size(bytes: u64) -> TestResult {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain libc calls with valid arguments; the child runs this one test only.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
            return Err(io::Error::last_os_error().into());
        }
    }
    Ok(())
}

#[test]
fn maildir_write_failure_is_temporary_and_leaves_nothing() -> TestResult {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        let tmp = tempfile::tempdir()?;
        return run_in_child(
            "maildir_write_failure_is_temporary_and_leaves_nothing",
            tmp.path(),
        );
    };
    let md = Maildir::new(PathBuf::from(dir).join("Maildir"));
    md.create()?;
    limit_file_size(100_000)?;
    let big = message("big", &"x".repeat(300_000));
    let err = md
        .deliver(&[], &big[..], &DeliverOptions::default())
        .err()
        .ok_or("write past RLIMIT_FSIZE succeeded")?;
    assert!(err.is_temporary() && err.is_full(), "{err}");
    assert!(matches!(err, Error::Io { op: "write", .. }), "{err}");
    assert!(dir_entries(&md.subdir("tmp")).is_empty());
    assert!(dir_entries(&md.subdir("new")).is_empty());
    println!("CHILD-OK");
    Ok(())
}

#[test]
fn mbox_write_failure_truncates_back() -> TestResult {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        let tmp = tempfile::tempdir()?;
        return run_in_child("mbox_write_failure_truncates_back", tmp.path());
    };
    let path = PathBuf::from(dir).join("mbox");
    deliver_mbox(
        &path,
        "a@b",
        &[],
        &message("ok", "fine\r\n")[..],
        &mbox_opts(),
    )?;
    let before = fs::read(&path)?;
    limit_file_size(100_000)?;
    let big = message("big", &"x".repeat(300_000));
    let err = deliver_mbox(&path, "a@b", &[], &big[..], &mbox_opts())
        .err()
        .ok_or("write past RLIMIT_FSIZE succeeded")?;
    assert!(err.is_temporary() && err.is_full(), "{err}");
    assert_eq!(fs::read(&path)?, before);
    assert!(!DotLockPath::of(&path).exists());
    println!("CHILD-OK");
    Ok(())
}
