//! The multi-client loop against real sockets: many sessions in one thread, timeouts,
//! asynchronous wake-ups, a panicking session, and exit when master goes away.

use oxipost_config::{Config, MainCf};
use oxipost_daemon::{
    Connection, ExitReason, Flow, Listener, MultiService, Peer, Worker, multi_server,
};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnix;
use std::time::Duration;

struct Echo {
    timeout: Duration,
}

impl Connection for Echo {
    fn start(&mut self, out: &mut Vec<u8>) -> Flow {
        out.extend_from_slice(b"hello\n");
        Flow::Continue
    }
    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) -> Flow {
        if data.starts_with(b"panic") {
            panic!("test panic");
        }
        if data.starts_with(b"quit") {
            out.extend_from_slice(b"bye\n");
            return Flow::Close;
        }
        out.extend(data.iter().map(|b| b.to_ascii_uppercase()));
        Flow::Continue
    }
    fn timeout(&mut self, out: &mut Vec<u8>) -> Flow {
        out.extend_from_slice(b"timeout\n");
        Flow::Close
    }
    fn timeout_after(&self) -> Duration {
        self.timeout
    }
}

struct EchoService {
    timeout: Duration,
}

impl MultiService for EchoService {
    type Conn = Echo;
    fn connect(&mut self, _peer: Peer, _id: usize) -> Option<Echo> {
        Some(Echo {
            timeout: self.timeout,
        })
    }
}

fn start(
    timeout: Duration,
) -> (
    std::net::SocketAddr,
    StdUnix,
    std::thread::JoinHandle<ExitReason>,
) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let cfg = Config::from_main(
        std::path::Path::new("/nonexistent"),
        MainCf::default(),
        false,
    );
    let mut w = Worker::from_parts("test", cfg, vec![Listener::Tcp(l)]);
    let (master_end, worker_end) = StdUnix::pair().expect("pair");
    w.watch = Some(OwnedFd::from(worker_end));
    let h = std::thread::spawn(move || multi_server(w, EchoService { timeout }));
    (addr, master_end, h)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read");
    s
}

#[test]
fn many_sessions_one_thread_and_master_exit() {
    let (addr, master, h) = start(Duration::from_secs(30));
    let mut clients: Vec<(TcpStream, BufReader<TcpStream>)> = (0..50)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let r = BufReader::new(s.try_clone().expect("clone"));
            (s, r)
        })
        .collect();
    for (i, (s, r)) in clients.iter_mut().enumerate() {
        assert_eq!(line(r), "hello\n");
        writeln!(s, "msg {i}").expect("write");
    }
    for (i, (_, r)) in clients.iter_mut().enumerate() {
        assert_eq!(line(r), format!("MSG {i}\n"));
    }
    let (s, r) = &mut clients[0];
    writeln!(s, "quit").expect("write");
    assert_eq!(line(r), "bye\n");
    assert_eq!(line(r), "", "closed after bye");
    drop(clients);
    drop(master);
    assert_eq!(h.join().expect("join"), ExitReason::MasterGone);
}

#[test]
fn idle_session_times_out() {
    let (addr, master, h) = start(Duration::from_millis(300));
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s);
    assert_eq!(line(&mut r), "hello\n");
    assert_eq!(line(&mut r), "timeout\n");
    assert_eq!(line(&mut r), "");
    drop(master);
    assert_eq!(h.join().expect("join"), ExitReason::MasterGone);
}

#[test]
fn panic_closes_only_that_session_and_drains() {
    let (addr, _master, h) = start(Duration::from_secs(30));
    let good = TcpStream::connect(addr).expect("connect");
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut gr = BufReader::new(good.try_clone().expect("clone"));
    assert_eq!(line(&mut gr), "hello\n");
    let mut bad = TcpStream::connect(addr).expect("connect");
    bad.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut br = BufReader::new(bad.try_clone().expect("clone"));
    assert_eq!(line(&mut br), "hello\n");
    bad.write_all(b"panic\n").expect("write");
    assert_eq!(line(&mut br), "", "panicking session closed");
    // The other session still works; the process exits once it is done.
    (&good).write_all(b"still here\n").expect("write");
    assert_eq!(line(&mut gr), "STILL HERE\n");
    (&good).write_all(b"quit\n").expect("write");
    assert_eq!(line(&mut gr), "bye\n");
    assert_eq!(h.join().expect("join"), ExitReason::Panic);
}
