//! End-to-end tests of the queue on real temporary directories.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxipost_queue::format::{self, rec};
use oxipost_queue::{
    Attribute, BodyType, CommitterOptions, DumpOptions, Envelope, GroupCommitter, Layout,
    MailParams, Notify, Queue, QueueConfig, QueueError, QueueFile, QueueId, QueueWriter, Recipient,
    Ret, WriterOptions,
};

fn setup() -> (tempfile::TempDir, Layout) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(QueueConfig::new(tmp.path().join("spool"))).expect("layout");
    layout.create_all().expect("create_all");
    (tmp, layout)
}

fn envelope() -> Envelope {
    Envelope {
        sender: "sender@example.org".into(),
        params: MailParams {
            size: Some(4242),
            body: Some(BodyType::EightBitMime),
            smtputf8: true,
            ret: Some(Ret::Hdrs),
            envid: Some("QQ314159".into()),
        },
        recipients: vec![
            Recipient {
                address: "a@example.com".into(),
                orcpt: Some("rfc822;a@example.com".into()),
                notify: Notify::SUCCESS | Notify::FAILURE,
                done: false,
            },
            Recipient::new("b@exämple.com"),
            Recipient {
                address: "c@example.net".into(),
                orcpt: None,
                notify: Notify::NEVER,
                done: false,
            },
        ],
        attributes: vec![
            Attribute {
                name: "client_name".into(),
                value: "mx.example.org".into(),
            },
            Attribute {
                name: "client_address".into(),
                value: "192.0.2.7".into(),
            },
            Attribute {
                name: "helo_name".into(),
                value: "mx.example.org".into(),
            },
            Attribute {
                name: "protocol_name".into(),
                value: "ESMTPSA".into(),
            },
            Attribute {
                name: "sasl_username".into(),
                value: "alice".into(),
            },
        ],
    }
}

fn write_message(layout: &Layout, content: &[u8]) -> QueueId {
    let mut w =
        QueueWriter::create(layout, Queue::Incoming, WriterOptions::default()).expect("create");
    w.write_envelope(&envelope()).expect("envelope");
    w.write_content(content).expect("content");
    w.finish().expect("finish")
}

fn read_content(qf: &QueueFile) -> Vec<u8> {
    let mut v = Vec::new();
    qf.content().read_to_end(&mut v).expect("read content");
    v
}

#[test]
fn write_read_round_trip_8bit() {
    let (_t, layout) = setup();
    let content: Vec<u8> =
        b"Subject: caf\xc3\xa9\r\n\r\nbody \xff\xfe\x00 raw 8-bit\r\n.\r\n".to_vec();
    let before = SystemTime::now();
    let id = write_message(&layout, &content);
    let path = layout.path_for(Queue::Incoming, &id);
    assert!(path.exists());
    let qf = QueueFile::open(&path).expect("open");
    assert!(qf.is_complete());
    assert_eq!(qf.id(), Some(id.clone()));
    assert_eq!(qf.envelope(), &envelope());
    assert_eq!(read_content(&qf), content);
    assert_eq!(qf.content_len(), content.len() as u64);
    // Arrival matches the time encoded in the id.
    let parts = id.long_parts().expect("long id");
    let arrival = qf.arrival().duration_since(UNIX_EPOCH).expect("time");
    assert_eq!(arrival.as_secs(), parts.secs);
    assert_eq!(arrival.subsec_micros(), parts.usecs);
    assert!(qf.arrival() + Duration::from_secs(1) >= before);
    // Inode in the id is the file's inode.
    assert_eq!(parts.inode, fs::metadata(&path).expect("meta").ino());
    // Finished files are mode 0700 ("ready"), and no temp file is left.
    assert_eq!(
        fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
        0o700
    );
    let names: Vec<_> = fs::read_dir(layout.queue_dir(Queue::Incoming))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn large_content_streams_in_small_writes_and_chunks() {
    let (_t, layout) = setup();
    let mut w =
        QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default()).expect("create");
    w.write_envelope(&envelope()).expect("env");
    // 10 MB written in odd-sized pieces; a checksum instead of keeping it all.
    let mut sum: u64 = 0;
    let mut total = 0usize;
    let mut piece = Vec::new();
    let mut i = 0u64;
    while total < 10_000_000 {
        piece.clear();
        let n = 1 + (i as usize * 7919) % 100_000;
        for k in 0..n {
            let b = ((i + k as u64) * 31 % 256) as u8;
            piece.push(b);
            sum = sum.wrapping_mul(131).wrapping_add(u64::from(b));
        }
        w.write_all(&piece).expect("write");
        total += n;
        i += 1;
    }
    assert_eq!(w.content_size(), total as u64);
    let id = w.finish().expect("finish");
    let qf = QueueFile::open(layout.path_for(Queue::Incoming, &id)).expect("open");
    assert_eq!(qf.content_len(), total as u64);
    let mut r = qf.content();
    let mut buf = vec![0u8; 10_000];
    let mut sum2: u64 = 0;
    let mut got = 0usize;
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            sum2 = sum2.wrapping_mul(131).wrapping_add(u64::from(b));
        }
        got += n;
    }
    assert_eq!(got, total);
    assert_eq!(sum, sum2);
}

#[test]
fn size_limit_removes_file() {
    let (_t, layout) = setup();
    let mut w = QueueWriter::create(
        &layout,
        Queue::Incoming,
        WriterOptions {
            max_content_size: Some(1000),
            ..WriterOptions::default()
        },
    )
    .expect("create");
    w.write_envelope(&envelope()).expect("env");
    w.write_content(&[b'x'; 600]).expect("first");
    let tmp = w.temp_path().to_path_buf();
    assert!(tmp.exists());
    let e = w.write_content(&[b'x'; 600]).expect_err("too large");
    assert!(matches!(e, QueueError::TooLarge { limit: 1000 }));
    assert!(!tmp.exists());
    assert!(w.finish().is_err());
    assert!(layout.list(Queue::Incoming).expect("list").is_empty());
}

#[test]
fn abort_and_drop_remove_partial_file() {
    let (_t, layout) = setup();
    let mut w =
        QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default()).expect("create");
    w.write_envelope(&envelope()).expect("env");
    let tmp = w.temp_path().to_path_buf();
    assert!(tmp.exists());
    w.abort();
    assert!(!tmp.exists());

    let w =
        QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default()).expect("create");
    let tmp = w.temp_path().to_path_buf();
    drop(w);
    assert!(!tmp.exists());

    let mut w =
        QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default()).expect("create");
    w.set_sender("").expect("sender");
    let p = w.prepare().expect("prepare");
    drop(p);
    assert_eq!(
        fs::read_dir(layout.queue_dir(Queue::Incoming))
            .expect("dir")
            .count(),
        0
    );
}

#[test]
fn every_truncation_is_incomplete_or_corrupt() {
    let (_t, layout) = setup();
    let id = write_message(&layout, b"Subject: t\r\n\r\nhello\r\n");
    let path = layout.path_for(Queue::Incoming, &id);
    let full = fs::read(&path).expect("read");
    let cut = layout.root().join("cut");
    for n in 0..full.len() {
        fs::write(&cut, &full[..n]).expect("write");
        match QueueFile::open(&cut) {
            Ok(_) => panic!("prefix of {n} bytes opened as complete"),
            Err(e) => assert!(
                e.is_incomplete() || e.is_corrupt(),
                "prefix {n}: unexpected error {e}"
            ),
        }
        if let Ok(qf) = QueueFile::open_partial(&cut) {
            assert!(!qf.is_complete(), "prefix {n} reads as complete");
        }
        let mut sink = Vec::new();
        assert!(oxipost_queue::dump(&cut, &mut sink, &DumpOptions::default()).is_err());
    }
    fs::write(&cut, &full).expect("write");
    assert!(QueueFile::open(&cut).expect("full").is_complete());
    // Bytes after the end marker are corrupt.
    let mut longer = full.clone();
    longer.push(0x01);
    fs::write(&cut, &longer).expect("write");
    assert!(QueueFile::open(&cut).expect_err("trailing").is_corrupt());
    // A zero-filled tail (crash on some file systems) is corrupt, not complete.
    let mut zeroed = full[..full.len() - 17].to_vec();
    zeroed.extend_from_slice(&[0u8; 17]);
    fs::write(&cut, &zeroed).expect("write");
    assert!(QueueFile::open(&cut).is_err());
}

#[test]
fn bit_flips_never_panic() {
    let (_t, layout) = setup();
    let id = write_message(&layout, b"Subject: t\r\n\r\nhello\r\n");
    let full = fs::read(layout.path_for(Queue::Incoming, &id)).expect("read");
    let cut = layout.root().join("flip");
    for i in 0..full.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut f = full.clone();
            f[i] ^= mask;
            fs::write(&cut, &f).expect("write");
            let _ = QueueFile::open(&cut);
            let _ = oxipost_queue::dump(&cut, &mut Vec::new(), &DumpOptions::default());
        }
    }
}

#[test]
fn done_marks_survive_reopen() {
    let (_t, layout) = setup();
    let id = write_message(&layout, b"x\r\n");
    let path = layout.path_for(Queue::Incoming, &id);
    let before = fs::read(&path).expect("read");
    {
        let mut ro = QueueFile::open(&path).expect("open");
        assert!(matches!(ro.mark_done(0), Err(QueueError::ReadOnly)));
    }
    let mut qf = QueueFile::open_for_update(&path).expect("open rw");
    assert_eq!(qf.pending().collect::<Vec<_>>(), vec![0, 1, 2]);
    qf.mark_done(1).expect("mark");
    qf.mark_done(2).expect("mark");
    assert!(matches!(
        qf.mark_done(3),
        Err(QueueError::NoSuchRecipient(3))
    ));
    assert!(qf.is_done_on_disk(1).expect("disk"));
    drop(qf);
    let after = fs::read(&path).expect("read");
    assert_eq!(before.len(), after.len());
    assert_eq!(
        before.iter().zip(&after).filter(|(a, b)| a != b).count(),
        2,
        "only two bytes change"
    );
    let qf = QueueFile::open(&path).expect("reopen");
    let done: Vec<bool> = qf.recipients().iter().map(|r| r.done).collect();
    assert_eq!(done, vec![false, true, true]);
    assert_eq!(qf.pending().collect::<Vec<_>>(), vec![0]);
    assert!(!qf.all_done());
}

#[test]
fn ids_unique_across_concurrent_writers() {
    let (_t, layout) = setup();
    let threads = 8;
    let per = 40;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let layout = layout.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut ids = Vec::new();
                for i in 0..per {
                    let mut w =
                        QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default())
                            .expect("create");
                    let early = w.id().clone();
                    w.set_sender(&format!("t{t}@x")).expect("sender");
                    w.add_recipient(&Recipient::new(format!("r{i}@y")))
                        .expect("rcpt");
                    w.write_content(format!("msg {t} {i}\r\n").as_bytes())
                        .expect("content");
                    let id = w.finish().expect("finish");
                    assert_eq!(early, id, "id known at create is the final id");
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for id in h.join().expect("thread") {
            assert_eq!(QueueId::parse(id.as_str()).expect("parse"), id);
            assert!(all.insert(id), "duplicate id");
        }
    }
    assert_eq!(all.len(), threads * per);
    let listed: HashSet<_> = layout
        .list(Queue::Incoming)
        .expect("list")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, all);
}

#[test]
fn group_commit_many_threads() {
    let (_t, layout) = setup();
    let committer = Arc::new(GroupCommitter::start(CommitterOptions::default()).expect("start"));
    let threads = 16;
    let per = 10;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let layout = layout.clone();
            let committer = Arc::clone(&committer);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..per {
                    let mut w =
                        QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default())
                            .expect("create");
                    w.write_envelope(&envelope()).expect("env");
                    w.write_content(format!("Subject: {t}/{i}\r\n\r\nbody\r\n").as_bytes())
                        .expect("content");
                    if i == 0 {
                        barrier.wait();
                    }
                    let id = w.finish_with(&committer).expect("commit");
                    // Durable-looking as soon as finish returns.
                    let qf = QueueFile::open(layout.path_for(Queue::Incoming, &id))
                        .expect("present under final name");
                    assert!(qf.is_complete());
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for id in h.join().expect("thread") {
            assert!(all.insert(id));
        }
    }
    assert_eq!(all.len(), threads * per);
    let stats = committer.stats();
    assert_eq!(stats.files, (threads * per) as u64);
    assert!(stats.rounds <= stats.files);
    assert!(stats.dir_syncs <= stats.rounds);
    for e in layout.list(Queue::Incoming).expect("list") {
        assert!(QueueFile::open(&e.path).expect("open").is_complete());
    }
}

#[test]
fn group_commit_event_loop_style() {
    let (_t, layout) = setup();
    let committer = GroupCommitter::start(CommitterOptions {
        gather_delay: Duration::from_millis(5),
        ..CommitterOptions::default()
    })
    .expect("start");
    let n = 20u64;
    for token in 0..n {
        let mut w = QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default())
            .expect("create");
        w.set_sender("s@x").expect("sender");
        w.add_recipient(&Recipient::new("r@y")).expect("rcpt");
        w.write_content(b"hi\r\n").expect("content");
        committer
            .submit(w.prepare().expect("prepare"), token)
            .expect("submit");
    }
    // Wait on the eventfd as an event loop would.
    let mut got = Vec::new();
    let fd = {
        use std::os::fd::AsRawFd;
        committer.notify_fd().as_raw_fd()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (got.len() as u64) < n && std::time::Instant::now() < deadline {
        let mut pfd = libc_pollfd(fd);
        poll_once(&mut pfd, 1000);
        got.extend(committer.take_completions());
    }
    assert_eq!(got.len() as u64, n);
    let mut tokens: Vec<u64> = got.iter().map(|c| c.token).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, (0..n).collect::<Vec<_>>());
    for c in got {
        let id = c.result.expect("committed");
        assert!(layout.path_for(Queue::Incoming, &id).exists());
    }
    // With a gather delay, 20 quick submissions need fewer rounds than files.
    assert!(committer.stats().rounds < n, "{:?}", committer.stats());
}

// Minimal poll(2) wrapper for the test (the crate's users would use mio).
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn libc_pollfd(fd: i32) -> PollFd {
    PollFd {
        fd,
        events: 1, // POLLIN
        revents: 0,
    }
}

unsafe extern "C" {
    fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
}

fn poll_once(p: &mut PollFd, ms: i32) {
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe {
        poll(p, 1, ms);
    }
}

#[test]
fn unknown_records_skipped_critical_refused_new_version_refused() {
    let (_t, layout) = setup();
    let id = write_message(&layout, b"body\r\n");
    let path = layout.path_for(Queue::Incoming, &id);
    let full = fs::read(&path).expect("read");
    // Insert an unknown non-critical record right after the header, fixing the END offset.
    let insert = |rtype: u8| -> Vec<u8> {
        let extra = {
            let mut r = format::encode_record_header(rtype, 3).to_vec();
            r.extend_from_slice(b"abc");
            r
        };
        let end_at = full.len() - (format::RECORD_HEADER_LEN as usize + 12);
        let mut f = full[..8].to_vec();
        f.extend_from_slice(&extra);
        f.extend_from_slice(&full[8..end_at]);
        let new_end = f.len() as u64;
        f.extend_from_slice(&format::encode_record_header(rec::END, 12));
        f.extend_from_slice(&format::encode_end(new_end));
        f
    };
    let other = layout.root().join("x");
    fs::write(&other, insert(0x33)).expect("write");
    let qf = QueueFile::open(&other).expect("unknown record skipped");
    assert_eq!(qf.skipped_records(), 1);
    assert_eq!(qf.envelope(), &envelope());
    assert_eq!(read_content(&qf), b"body\r\n");
    let mut out = Vec::new();
    oxipost_queue::dump(&other, &mut out, &DumpOptions::default()).expect("dump");
    assert!(String::from_utf8_lossy(&out).contains("unknown_record: type=0x33"));

    fs::write(&other, insert(0x99)).expect("write");
    assert!(QueueFile::open(&other).expect_err("critical").is_corrupt());

    let mut v2 = full.clone();
    v2[4..6].copy_from_slice(&2u16.to_be_bytes());
    fs::write(&other, &v2).expect("write");
    assert!(matches!(
        QueueFile::open(&other),
        Err(QueueError::UnsupportedVersion(2))
    ));
}

#[test]
fn move_between_queues_with_hashing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(
        QueueConfig::new(tmp.path().join("spool"))
            .with_hash_queue_depth(2)
            .with_hash_queue_names("deferred, defer, hold"),
    )
    .expect("layout");
    layout.create_all().expect("create");
    let id = write_message(&layout, b"m\r\n");
    let active = layout
        .move_to(&id, Queue::Incoming, Queue::Active)
        .expect("mv");
    assert_eq!(active, layout.queue_dir(Queue::Active).join(id.as_str()));
    let deferred = layout
        .move_to(&id, Queue::Active, Queue::Deferred)
        .expect("mv");
    let key = id.hash_key();
    let expect = layout
        .queue_dir(Queue::Deferred)
        .join(&key[..1])
        .join(&key[1..2])
        .join(id.as_str());
    assert_eq!(deferred, expect);
    assert!(deferred.exists());
    assert_eq!(layout.find(&id).map(|f| f.0), Some(Queue::Deferred));
    // Next attempt time is the mtime.
    let when = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    layout
        .set_next_attempt(Queue::Deferred, &id, when)
        .expect("utimes");
    assert_eq!(
        layout.next_attempt(Queue::Deferred, &id).expect("mtime"),
        when
    );
    let listed = layout.list(Queue::Deferred).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    // Hold: hashed too, hash dir made on demand after removal.
    fs::remove_dir_all(layout.queue_dir(Queue::Hold)).expect("rm");
    fs::create_dir(layout.queue_dir(Queue::Hold)).expect("mk");
    let held = layout
        .move_to(&id, Queue::Deferred, Queue::Hold)
        .expect("mv");
    assert!(held.exists());
    assert_eq!(layout.list(Queue::Hold).expect("list").len(), 1);
    assert!(layout.list(Queue::Deferred).expect("list").is_empty());
    let qf = QueueFile::open(&held).expect("open");
    assert_eq!(qf.envelope(), &envelope());
    assert!(layout.remove(Queue::Hold, &id).expect("rm"));
    assert!(!layout.remove(Queue::Hold, &id).expect("rm again"));
    assert!(layout.find(&id).is_none());
}

#[test]
fn dump_prints_every_record() {
    let (_t, layout) = setup();
    let id = write_message(&layout, b"Subject: dump\r\n\r\nline\r\n");
    let path = layout.path_for(Queue::Incoming, &id);
    let mut out = Vec::new();
    oxipost_queue::dump(
        &path,
        &mut out,
        &DumpOptions {
            offsets: true,
            ..DumpOptions::default()
        },
    )
    .expect("dump");
    let s = String::from_utf8(out).expect("utf8");
    for needle in [
        "*** ENVELOPE RECORDS",
        "message_arrival_time:",
        "sender: sender@example.org",
        "mail_params: SIZE=4242 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159",
        "original_recipient: rfc822;a@example.com",
        "recipient: a@example.com (#0 notify=SUCCESS,FAILURE)",
        "recipient: b@exämple.com (#1",
        "named_attribute: client_address=192.0.2.7",
        "*** MESSAGE CONTENTS",
        "Subject: dump\r\n\r\nline\r\n",
        "*** MESSAGE FILE END",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
    let qf = QueueFile::open(&path).expect("open");
    let shown = qf.to_string();
    assert!(shown.contains("sender: sender@example.org"));
    assert!(shown.contains("message_size: 23"));
}

#[test]
fn stale_temp_files_are_cleaned_and_not_listed() {
    let (_t, layout) = setup();
    let w =
        QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default()).expect("create");
    let tmp = w.temp_path().to_path_buf();
    std::mem::forget(w); // simulate a crashed writer
    assert!(tmp.exists());
    assert!(layout.list(Queue::Incoming).expect("list").is_empty());
    assert_eq!(
        layout
            .remove_stale_temp(Queue::Incoming, Duration::from_secs(3600))
            .expect("rm"),
        0
    );
    assert_eq!(
        layout
            .remove_stale_temp(Queue::Incoming, Duration::ZERO)
            .expect("rm"),
        1
    );
    assert!(!tmp.exists());
}

#[test]
fn writer_into_maildrop_and_flags() {
    let (_t, layout) = setup();
    let arrival = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_000);
    let mut w = QueueWriter::create(
        &layout,
        Queue::Maildrop,
        WriterOptions {
            flags: format::FLAG_TRACE,
            arrival: Some(arrival),
            ..WriterOptions::default()
        },
    )
    .expect("create");
    w.set_sender("").expect("null sender");
    w.add_recipient(&Recipient::new("root")).expect("rcpt");
    let id = w.finish().expect("finish");
    let qf = QueueFile::open(layout.path_for(Queue::Maildrop, &id)).expect("open");
    assert_eq!(qf.flags(), format::FLAG_TRACE);
    assert_eq!(qf.arrival(), arrival);
    assert_eq!(qf.sender(), "");
    assert_eq!(qf.content_len(), 0);
    assert!(read_content(&qf).is_empty());
}

/// `cargo test -p oxipost-queue --release -- --ignored --nocapture bench_` prints messages per
/// second for solo commits versus group commit with several concurrent writers.
#[test]
#[ignore]
fn bench_group_commit_vs_solo() {
    let (_t, layout) = setup();
    let threads = 8;
    let per = 50;
    let body = vec![b'x'; 10_000];
    let run = |committer: Option<Arc<GroupCommitter>>| -> Duration {
        let start = std::time::Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let layout = layout.clone();
                let committer = committer.clone();
                let body = body.clone();
                std::thread::spawn(move || {
                    for _ in 0..per {
                        let mut w =
                            QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default())
                                .expect("create");
                        w.write_envelope(&envelope()).expect("env");
                        w.write_content(&body).expect("content");
                        match &committer {
                            Some(c) => w.finish_with(c).expect("group"),
                            None => w.finish().expect("solo"),
                        };
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("join");
        }
        start.elapsed()
    };
    let n = (threads * per) as f64;
    for round in 0..2 {
        let solo = run(None);
        println!("[{round}] solo: {:.0} msg/s", n / solo.as_secs_f64());
        for sync_threads in [1, 4] {
            let committer = Arc::new(
                GroupCommitter::start(CommitterOptions {
                    sync_threads,
                    ..CommitterOptions::default()
                })
                .expect("start"),
            );
            let group = run(Some(Arc::clone(&committer)));
            println!(
                "[{round}] group (sync_threads {sync_threads}): {:.0} msg/s {:?}",
                n / group.as_secs_f64(),
                committer.stats()
            );
        }
    }
}

/// Not a test by itself: the body of a child process for `ids_unique_across_processes`.
#[test]
#[ignore]
fn child_writer_process() {
    let Ok(dir) = std::env::var("OXQ_CHILD_QUEUE_DIR") else {
        return;
    };
    let layout = Layout::new(QueueConfig::new(dir)).expect("layout");
    for i in 0..30 {
        let mut w = QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default())
            .expect("create");
        w.set_sender("child@x").expect("sender");
        w.add_recipient(&Recipient::new("r@y")).expect("rcpt");
        w.write_content(format!("m{i}\r\n").as_bytes())
            .expect("content");
        println!("QUEUEID {}", w.finish().expect("finish"));
    }
}

#[test]
fn ids_unique_across_processes() {
    let (_t, layout) = setup();
    let exe = std::env::current_exe().expect("exe");
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "child_writer_process",
                    "--nocapture",
                ])
                .env("OXQ_CHILD_QUEUE_DIR", layout.root())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut ids = HashSet::new();
    for c in children {
        let out = c.wait_with_output().expect("child");
        assert!(out.status.success());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(id) = line.strip_prefix("QUEUEID ") {
                assert!(
                    ids.insert(QueueId::parse(id).expect("id")),
                    "duplicate {id}"
                );
            }
        }
    }
    assert_eq!(ids.len(), 4 * 30);
    let listed: HashSet<_> = layout
        .list(Queue::Incoming)
        .expect("list")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, ids);
}

#[test]
fn done_marks_in_one_batch() {
    let (_t, layout) = setup();
    let id = write_message(&layout, b"x\r\n");
    let path = layout.path_for(Queue::Incoming, &id);
    let mut qf = QueueFile::open_for_update(&path).expect("open rw");
    qf.mark_done_many(&[0, 2], true).expect("mark");
    assert!(matches!(
        qf.mark_done_many(&[9], false),
        Err(QueueError::NoSuchRecipient(9))
    ));
    drop(qf);
    let qf = QueueFile::open(&path).expect("reopen");
    assert_eq!(qf.pending().collect::<Vec<_>>(), vec![1]);
}
