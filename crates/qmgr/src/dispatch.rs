//! Talking to delivery agents: per transport, a small pool of threads, each holding one
//! connection to `private/<transport>` (master starts an agent process per connection, up
//! to the transport's process limit) and carrying one request at a time. The scheduler
//! decides what runs; threads only move requests and replies, and wake the scheduler's
//! event loop through a socket pair when a reply is in.

use oxipost_ipc::{
    CAP_BATCH, DELIVERY_PROTOCOL, DELIVERY_VERSION, DeliveryBatch, DeliveryBatchReply,
    DeliveryReply, DeliveryRequest, Hello,
};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests handed to a transport together (one destination), with the scheduler's keys.
pub struct Job {
    pub keys: Vec<u64>,
    pub requests: Vec<DeliveryRequest>,
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Done {
    pub keys: Vec<u64>,
    pub transport: String,
    /// One per key, in order.
    pub results: Vec<Result<DeliveryReply, String>>,
    /// The agent could not be reached at all (as opposed to failing mid-request).
    pub unavailable: bool,
}

struct Pool {
    jobs: Sender<Job>,
    threads: usize,
    limit: usize,
    queue: Arc<Mutex<Receiver<Job>>>,
}

pub struct Dispatcher {
    private_dir: PathBuf,
    timeout: Duration,
    pools: HashMap<String, Pool>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    wake_rx: UnixStream,
    wake_tx: UnixStream,
}

impl Dispatcher {
    pub fn new(private_dir: PathBuf, timeout: Duration) -> std::io::Result<Dispatcher> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let (done_tx, done_rx) = channel();
        Ok(Dispatcher {
            private_dir,
            timeout,
            pools: HashMap::new(),
            done_tx,
            done_rx,
            wake_rx,
            wake_tx,
        })
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake_rx.as_raw_fd()
    }

    /// Hands a job to its transport, starting a connection thread when all are busy and
    /// the process limit allows. The caller has already checked its concurrency limits.
    pub fn send(&mut self, transport: &str, limit: usize, busy: usize, job: Job) {
        let pool = self.pools.entry(transport.to_string()).or_insert_with(|| {
            let (tx, rx) = channel();
            Pool {
                jobs: tx,
                threads: 0,
                limit,
                queue: Arc::new(Mutex::new(rx)),
            }
        });
        let _ = pool.jobs.send(job);
        if busy >= pool.threads && pool.threads < pool.limit {
            pool.threads += 1;
            let queue = Arc::clone(&pool.queue);
            let done = self.done_tx.clone();
            let wake = self.wake_tx.try_clone();
            let socket = self.private_dir.join(transport);
            let name = transport.to_string();
            let timeout = self.timeout;
            std::thread::spawn(move || {
                if let Ok(wake) = wake {
                    connection_thread(name, socket, timeout, queue, done, wake);
                }
            });
        }
    }

    /// Replies that have come in (drains the wake socket too).
    pub fn take_done(&mut self) -> Vec<Done> {
        let mut buf = [0u8; 256];
        while let Ok(n) = std::io::Read::read(&mut self.wake_rx, &mut buf) {
            if n == 0 {
                break;
            }
        }
        self.done_rx.try_iter().collect()
    }
}

struct Agent {
    stream: UnixStream,
    /// The agent takes several requests in one frame.
    batch: bool,
}

fn connect(socket: &PathBuf, timeout: Duration) -> Result<Agent, String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("connect to {}: {}", socket.display(), e))?;
    // A throttled service (its program fails to start) leaves the connection pending in
    // master's listen queue: give up on the greeting long before ipc_timeout.
    let _ = stream.set_read_timeout(Some(timeout.min(HELLO_TIMEOUT)));
    let _ = stream.set_write_timeout(Some(timeout));
    let hello = Hello::expect(&mut stream, DELIVERY_PROTOCOL, DELIVERY_VERSION)
        .map_err(|e| format!("{}: {}", socket.display(), e))?;
    let _ = stream.set_read_timeout(Some(timeout));
    Ok(Agent {
        stream,
        batch: hello.has(CAP_BATCH),
    })
}

/// Sends a job's requests (as one batch when the agent can take it, else one by one) and
/// returns one result per request.
fn exchange(a: &mut Agent, requests: &[DeliveryRequest]) -> Result<Vec<DeliveryReply>, String> {
    if requests.len() > 1 && a.batch {
        oxipost_ipc::write_frame(
            &mut a.stream,
            &DeliveryBatch {
                requests: requests.to_vec(),
            },
        )
        .map_err(|e| format!("delivery agent: {e}"))?;
        let reply: Option<DeliveryBatchReply> =
            oxipost_ipc::read_frame(&mut a.stream).map_err(|e| format!("delivery agent: {e}"))?;
        let reply = reply.ok_or("delivery agent closed the connection")?;
        if reply.replies.len() != requests.len() {
            return Err("delivery agent answered a different number of requests".into());
        }
        return Ok(reply.replies);
    }
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        oxipost_ipc::write_frame(&mut a.stream, r).map_err(|e| format!("delivery agent: {e}"))?;
        let reply: Option<DeliveryReply> =
            oxipost_ipc::read_frame(&mut a.stream).map_err(|e| format!("delivery agent: {e}"))?;
        out.push(reply.ok_or("delivery agent closed the connection")?);
    }
    Ok(out)
}

/// One connection's life: take a job, send it, wait for the reply, report, repeat. A
/// broken connection is dropped and re-established for the next job. The thread ends when
/// the scheduler drops the pool's sender, or after a long idle period.
fn connection_thread(
    transport: String,
    socket: PathBuf,
    timeout: Duration,
    queue: Arc<Mutex<Receiver<Job>>>,
    done: Sender<Done>,
    mut wake: UnixStream,
) {
    let mut agent: Option<Agent> = None;
    loop {
        let job = {
            let Ok(rx) = queue.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let mut result: Result<Vec<DeliveryReply>, String> = Err(String::new());
        let mut unavailable = false;
        // One retry on a fresh connection: an idle agent may have exited (max_idle). A
        // retry can deliver a message twice only if the agent died after delivering and
        // before answering, which any MTA accepts.
        for _attempt in 0..2 {
            if agent.is_none() {
                match connect(&socket, timeout) {
                    Ok(a) => agent = Some(a),
                    Err(e) => {
                        result = Err(e);
                        unavailable = true;
                        break;
                    }
                }
            }
            let Some(a) = agent.as_mut() else { break };
            result = exchange(a, &job.requests);
            if result.is_ok() {
                break;
            }
            agent = None;
        }
        let results = match result {
            Ok(replies) => replies.into_iter().map(Ok).collect(),
            Err(e) => job.requests.iter().map(|_| Err(e.clone())).collect(),
        };
        let _ = done.send(Done {
            keys: job.keys,
            transport: transport.clone(),
            results,
            unavailable,
        });
        let _ = wake.write(b"x");
    }
}
