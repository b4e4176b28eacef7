//! The queue operations themselves, on a [`Layout`].

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use oxipost_queue::{Layout, Queue, QueueId, writer::TEMP_PREFIX};

/// Temporary files younger than this may still be written to and are left alone.
pub const TEMP_AGE: Duration = Duration::from_secs(3600);

/// What to do.
#[derive(Debug, Default)]
pub struct Request {
    pub delete: Vec<String>,
    pub hold: Vec<String>,
    pub release: Vec<String>,
    pub requeue: Vec<String>,
    pub structure: bool,
    pub purge: bool,
}

impl Request {
    pub fn any(&self) -> bool {
        self.structure
            || self.purge
            || !self.delete.is_empty()
            || !self.hold.is_empty()
            || !self.release.is_empty()
            || !self.requeue.is_empty()
    }
}

/// What was done.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub fixed: usize,
    pub purged: usize,
    pub deleted: usize,
    pub held: usize,
    pub released: usize,
    pub requeued: usize,
}

const DELETE_FROM: &[Queue] = &[Queue::Hold, Queue::Incoming, Queue::Active, Queue::Deferred];
const HOLD_FROM: &[Queue] = &[Queue::Incoming, Queue::Active, Queue::Deferred];
const RELEASE_FROM: &[Queue] = &[Queue::Hold];
const REQUEUE_FROM: &[Queue] = &[Queue::Hold, Queue::Incoming, Queue::Active, Queue::Deferred];

/// The (queue, id) pairs an operation applies to.
fn targets(layout: &Layout, ids: &[String], queues: &[Queue]) -> Vec<(Queue, QueueId)> {
    let mut out = Vec::new();
    for spec in ids {
        if spec == "ALL" {
            for &q in queues {
                match layout.list(q) {
                    Ok(l) => out.extend(l.into_iter().map(|e| (q, e.id))),
                    Err(e) => oxipost_log::warning!("scan {q} queue: {e}"),
                }
            }
            continue;
        }
        let Ok(id) = QueueId::parse(spec) else {
            oxipost_log::warning!("invalid mail queue id: {spec}");
            continue;
        };
        if let Some(&q) = queues.iter().find(|&&q| layout.path_for(q, &id).exists()) {
            out.push((q, id));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn pick<'a>(given: &'a [Queue], default: &'a [Queue]) -> &'a [Queue] {
    if given.is_empty() { default } else { given }
}

/// Runs the request in Postfix's order.
pub fn run(layout: &Layout, req: &Request, queues: &[Queue]) -> Counts {
    let mut c = Counts::default();
    if req.structure {
        c.fixed = fix_structure(layout);
    }
    if req.structure || req.purge {
        c.purged = purge_temp(layout, TEMP_AGE);
    }
    for (q, id) in targets(layout, &req.delete, pick(queues, DELETE_FROM)) {
        match layout.remove(q, &id) {
            Ok(true) => {
                for log in [Queue::Defer, Queue::Bounce, Queue::Trace] {
                    let _ = layout.remove(log, &id);
                }
                oxipost_log::info!("{id}: removed");
                c.deleted += 1;
            }
            Ok(false) => {}
            Err(e) => oxipost_log::warning!("{id}: remove from {q}: {e}"),
        }
    }
    for (q, id) in targets(layout, &req.hold, pick(queues, HOLD_FROM)) {
        if q == Queue::Hold {
            continue;
        }
        match layout.move_to(&id, q, Queue::Hold) {
            Ok(_) => {
                oxipost_log::info!("{id}: placed on hold");
                c.held += 1;
            }
            Err(e) => oxipost_log::warning!("{id}: hold: {e}"),
        }
    }
    for (q, id) in targets(layout, &req.release, pick(queues, RELEASE_FROM)) {
        if q != Queue::Hold {
            continue;
        }
        match layout.move_to(&id, q, Queue::Deferred) {
            Ok(_) => {
                // Due at once: the next deferred scan takes it.
                let _ = layout.set_next_attempt(Queue::Deferred, &id, SystemTime::now());
                oxipost_log::info!("{id}: released from hold");
                c.released += 1;
            }
            Err(e) => oxipost_log::warning!("{id}: release: {e}"),
        }
    }
    for (q, id) in targets(layout, &req.requeue, pick(queues, REQUEUE_FROM)) {
        if q == Queue::Incoming {
            oxipost_log::info!("{id}: requeued");
            c.requeued += 1;
            continue;
        }
        match layout.move_to(&id, q, Queue::Incoming) {
            Ok(_) => {
                oxipost_log::info!("{id}: requeued");
                c.requeued += 1;
            }
            Err(e) => oxipost_log::warning!("{id}: requeue: {e}"),
        }
    }
    c
}

/// Every regular file under `dir`, at most `depth` directory levels down.
fn files(dir: &Path, depth: u32, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else {
            continue;
        };
        if ft.is_dir() && depth > 0 {
            files(&e.path(), depth - 1, out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// Moves queue files that are not where the layout says (a changed `hash_queue_depth` or
/// `hash_queue_names`, a file copied by hand) and reports names that are not queue ids.
pub fn fix_structure(layout: &Layout) -> usize {
    let mut fixed = 0;
    for q in Queue::ALL {
        let mut all = Vec::new();
        files(&layout.queue_dir(q), 10, &mut all);
        for path in all {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let Ok(id) = QueueId::parse(&name) else {
                oxipost_log::warning!("bogus file name: {}", path.display());
                continue;
            };
            let want = layout.path_for(q, &id);
            if want == path {
                continue;
            }
            if want.exists() {
                oxipost_log::warning!(
                    "{}: a file with this name exists in {}; left in place",
                    path.display(),
                    want.display()
                );
                continue;
            }
            let moved = layout
                .ensure_dir(q, &id)
                .map_err(io::Error::from)
                .and_then(|_| fs::rename(&path, &want));
            match moved {
                Ok(()) => {
                    oxipost_log::info!("{id}: moved from {} to {}", path.display(), want.display());
                    fixed += 1;
                }
                Err(e) => oxipost_log::warning!("{id}: move to {}: {e}", want.display()),
            }
        }
    }
    fixed
}

/// Removes temporary files older than `age` from every queue directory.
pub fn purge_temp(layout: &Layout, age: Duration) -> usize {
    let mut n = 0;
    for q in Queue::MESSAGE_QUEUES {
        match layout.remove_stale_temp(q, age) {
            Ok(k) => n += k,
            Err(e) => oxipost_log::warning!("purge {q} queue: {e}"),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_queue::{QueueConfig, QueueWriter, Recipient, WriterOptions};

    fn message(layout: &Layout, q: Queue) -> QueueId {
        let mut w =
            QueueWriter::create(layout, Queue::Incoming, WriterOptions::default()).expect("w");
        w.set_sender("s@x").expect("s");
        w.add_recipient(&Recipient::new("r@y")).expect("r");
        w.write_content(b"x\n").expect("c");
        let id = w.finish().expect("f");
        if q != Queue::Incoming {
            layout.move_to(&id, Queue::Incoming, q).expect("mv");
        }
        id
    }

    #[test]
    fn hold_release_requeue_delete() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(QueueConfig::new(tmp.path())).expect("layout");
        layout.create_all().expect("create");
        let a = message(&layout, Queue::Deferred);
        let b = message(&layout, Queue::Deferred);
        let req = Request {
            hold: vec!["ALL".into()],
            ..Request::default()
        };
        assert_eq!(run(&layout, &req, &[]).held, 2);
        let req = Request {
            release: vec![a.to_string()],
            ..Request::default()
        };
        assert_eq!(run(&layout, &req, &[]).released, 1);
        assert!(layout.path_for(Queue::Deferred, &a).exists());
        let req = Request {
            requeue: vec![a.to_string()],
            ..Request::default()
        };
        assert_eq!(run(&layout, &req, &[]).requeued, 1);
        assert!(layout.path_for(Queue::Incoming, &a).exists());
        let req = Request {
            delete: vec!["ALL".into()],
            ..Request::default()
        };
        assert_eq!(run(&layout, &req, &[Queue::Hold]).deleted, 1);
        assert!(!layout.path_for(Queue::Hold, &b).exists());
        assert!(layout.path_for(Queue::Incoming, &a).exists());
    }

    #[test]
    fn structure_repair() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(QueueConfig::new(tmp.path())).expect("layout");
        layout.create_all().expect("create");
        let id = message(&layout, Queue::Deferred);
        // Misplaced: top of deferred/ instead of its hash directory; and in incoming/X/.
        let wrong = layout.queue_dir(Queue::Deferred).join(id.as_str());
        fs::rename(layout.path_for(Queue::Deferred, &id), &wrong).expect("mv");
        fs::write(layout.queue_dir(Queue::Hold).join("not-an-id"), b"x").expect("w");
        assert_eq!(fix_structure(&layout), 1);
        assert!(layout.path_for(Queue::Deferred, &id).exists());
        assert!(layout.queue_dir(Queue::Hold).join("not-an-id").exists());
        let t = layout.queue_dir(Queue::Incoming).join(".tmp.1.2.3");
        fs::write(&t, b"x").expect("w");
        assert_eq!(purge_temp(&layout, Duration::from_secs(3600)), 0);
        assert_eq!(purge_temp(&layout, Duration::ZERO), 1);
        assert!(!t.exists());
    }
}
