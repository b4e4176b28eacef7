//! oxipost-testd: a tiny worker for master's tests, written directly against the
//! master <-> worker protocol with std and libc only (no worker skeleton). It waits for a
//! client on its listening descriptors, reports Available/Taken on the status pipe, greets
//! each client with `<pid> <service_name>\n` and echoes its lines, exits after `max_use`
//! clients (`-o max_use=N`, default 100), after `max_idle` idle seconds (`-o max_idle=N`,
//! default 100), on SIGTERM (finishing the client at hand) or when master goes away
//! (end-of-file on the watch descriptor). The argument `crash-at-start` makes it exit 1
//! before reporting anything, to test throttling. Not installed; tests only.

use oxipost_daemon::proto::{
    ENV_GENERATION, ENV_LISTEN_FDS, LISTEN_FD_BASE, STATUS_FD, Status, StatusRecord, WATCH_FD,
};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Installs a handler without SA_RESTART, so that blocking calls return EINTR.
fn handle(sig: libc::c_int, f: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction with a plain handler is valid; the handlers only touch
    // an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = f as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

fn report(pid: u32, generation: u32, status: Status) {
    let rec = StatusRecord {
        pid,
        generation,
        status,
    }
    .encode();
    // SAFETY: writes from a buffer we own to the inherited status descriptor.
    unsafe {
        libc::write(STATUS_FD, rec.as_ptr().cast(), rec.len());
    }
}

fn main() {
    let mut name = String::from("unknown");
    let mut max_use: u64 = 100;
    let mut max_idle: u64 = 100;
    let mut crash = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => name = args.next().unwrap_or_default(),
            "-t" => {
                let _ = args.next();
            }
            "-o" => {
                let nv = args.next().unwrap_or_default();
                if let Some(v) = nv.strip_prefix("max_use=") {
                    max_use = v.parse().unwrap_or(max_use);
                } else if let Some(v) = nv.strip_prefix("max_idle=") {
                    max_idle = v.parse().unwrap_or(max_idle);
                }
            }
            "crash-at-start" => crash = true,
            _ => {}
        }
    }
    if crash {
        std::process::exit(1);
    }
    let nfds: RawFd = std::env::var(ENV_LISTEN_FDS)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let generation: u32 = std::env::var(ENV_GENERATION)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    handle(libc::SIGTERM, on_term);
    handle(libc::SIGALRM, on_alarm);
    let pid = std::process::id();
    let mut served = 0u64;
    let mut idle_since = Instant::now();
    report(pid, generation, Status::Available);
    while !TERMINATE.load(Ordering::SeqCst) && served < max_use {
        if idle_since.elapsed() > Duration::from_secs(max_idle) {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = (0..nfds)
            .map(|i| libc::pollfd {
                fd: LISTEN_FD_BASE + i,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        pfds.push(libc::pollfd {
            fd: WATCH_FD,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: pfds is a valid array of pollfd for the call's duration.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
        if n <= 0 {
            continue;
        }
        if pfds.last().is_some_and(|p| p.revents != 0) {
            break; // master is gone
        }
        let Some(ready) = pfds.iter().find(|p| p.revents & libc::POLLIN != 0) else {
            continue;
        };
        // Another worker may win the race for this client: the alarm bounds the wait.
        // SAFETY: alarm and accept on our inherited listening descriptor.
        let conn = unsafe {
            libc::alarm(1);
            let c = libc::accept4(
                ready.fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            );
            libc::alarm(0);
            c
        };
        if conn < 0 {
            continue;
        }
        report(pid, generation, Status::Taken);
        // SAFETY: accept returned a new descriptor that we now own.
        let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(conn) };
        serve(stream, pid, &name);
        served += 1;
        idle_since = Instant::now();
        if served < max_use && !TERMINATE.load(Ordering::SeqCst) {
            report(pid, generation, Status::Available);
        }
    }
}

/// Greets and echoes. The descriptor may be TCP or unix: only read/write are used.
fn serve(stream: std::os::unix::net::UnixStream, pid: u32, name: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    if w.write_all(format!("{pid} {name}\n").as_bytes()).is_err() {
        return;
    }
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if w.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
