//! Test helper: writes one message into a queue as smtpd/cleanup would, so that local can
//! be driven without them.
//!
//! `mkqueue QUEUE_DIRECTORY SENDER RCPT[=ORCPT]... < message` prints `QUEUE_ID PATH` of the
//! new file in `incoming/`. An empty SENDER is the null sender.

use std::io::Read;
use std::process::ExitCode;

use oxipost_queue::{Layout, Queue, QueueConfig, QueueWriter, Recipient, WriterOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.iter().any(|a| a == "--help") {
        eprintln!("usage: mkqueue QUEUE_DIRECTORY SENDER RCPT[=ORCPT]... < message");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mkqueue: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    let layout = Layout::new(QueueConfig::new(&args[0]))?;
    layout.create_all()?;
    let mut w = QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default())?;
    w.set_sender(&args[1])?;
    for r in &args[2..] {
        let mut rcpt = match r.split_once('=') {
            Some((a, o)) => {
                let mut rc = Recipient::new(a);
                rc.orcpt = Some(o.to_string());
                rc
            }
            None => Recipient::new(r.as_str()),
        };
        rcpt.done = false;
        w.add_recipient(&rcpt)?;
    }
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    w.write_content(&body)?;
    let id = w.finish()?;
    let path = layout.path_for(Queue::Incoming, &id);
    Ok(format!("{} {}", id.as_str(), path.display()))
}
