//! postcat(1): prints queue files, as Postfix's postcat. Files are named on the command
//! line, found by queue id in any queue with `-q`, or read from standard input. `-e`
//! prints the envelope records, `-h` the message header, `-b` the body; with none of
//! them, everything. `-o` prefixes envelope records with their offsets. The record
//! printing is the queue crate's `dump`; this program only selects and splits. A corrupt
//! or incomplete file is printed as far as it can be read, then the error, exit status 1.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oxipost_postdrop::{Settings, fatal_exit, sysexits};
use oxipost_queue::{DumpOptions, Queue, QueueFile, QueueId, dump};

const USAGE: &str = "\
usage: postcat [-bdehoqv] [-c config_dir] [files...]
  -e      show envelope records
  -h      show the message header
  -b      show the message body
          (none of -e -h -b: show everything)
  -o      show record offsets
  -q      the arguments are queue ids, looked up in every queue
  -c dir  configuration directory (also MAIL_CONFIG)
Without files, a queue file is read from standard input.";

#[derive(Clone, Copy, Default)]
struct Show {
    envelope: bool,
    header: bool,
    body: bool,
    offsets: bool,
}

fn main() {
    oxipost_log::init_tool("postcat");
    let mut show = Show::default();
    let mut by_id = false;
    let mut config: Option<PathBuf> = None;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    let usage = |t: &str| -> ! { fatal_exit(sysexits::EX_USAGE, &format!("{t}\n{USAGE}")) };
    while let Some(a) = args.next() {
        if a == "--help" {
            println!("{USAGE}");
            return;
        }
        if a == "-c" {
            config = Some(PathBuf::from(
                args.next().unwrap_or_else(|| usage("-c needs a directory")),
            ));
            continue;
        }
        match a.strip_prefix('-') {
            Some(flags) if !flags.is_empty() => {
                for c in flags.chars() {
                    match c {
                        'e' => show.envelope = true,
                        'h' => show.header = true,
                        'b' => show.body = true,
                        'o' => show.offsets = true,
                        'q' => by_id = true,
                        'v' | 'd' | 'r' => {}
                        other => usage(&format!("invalid option -{other}")),
                    }
                }
            }
            _ => names.push(a),
        }
    }
    if !show.envelope && !show.header && !show.body {
        show = Show {
            envelope: true,
            header: true,
            body: true,
            ..show
        };
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut failed = false;
    if by_id {
        if names.is_empty() {
            usage("-q needs queue ids");
        }
        let settings = Settings::load(config.as_deref())
            .unwrap_or_else(|e| fatal_exit(sysexits::EX_CONFIG, &e));
        let layout = settings
            .layout()
            .unwrap_or_else(|e| fatal_exit(sysexits::EX_CONFIG, &e));
        for n in &names {
            let id = QueueId::parse(n)
                .unwrap_or_else(|_| fatal_exit(1, &format!("invalid queue id: {n}")));
            let Some((_, path)) = layout.find(&id).or_else(|| {
                let p = layout.path_for(Queue::Corrupt, &id);
                p.exists().then_some((Queue::Corrupt, p))
            }) else {
                let _ = out.flush();
                fatal_exit(
                    1,
                    &format!("open queue file {n}: No such file or directory"),
                );
            };
            failed |= !print(&path, show, &mut out);
        }
    } else if names.is_empty() {
        // A queue file on standard input: copy it to a private temporary file first.
        let mut data = Vec::new();
        if let Err(e) = io::stdin().lock().read_to_end(&mut data) {
            fatal_exit(sysexits::EX_NOINPUT, &format!("read standard input: {e}"));
        }
        let dir = std::env::temp_dir().join(format!("postcat.{}", std::process::id()));
        let path = dir.with_extension("tmp");
        if let Err(e) = std::fs::write(&path, &data) {
            fatal_exit(sysexits::EX_CANTCREAT, &format!("{}: {e}", path.display()));
        }
        failed |= !print(&path, show, &mut out);
        let _ = std::fs::remove_file(&path);
    } else {
        for n in &names {
            failed |= !print(Path::new(n), show, &mut out);
        }
    }
    if let Err(e) = out.flush()
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        fatal_exit(sysexits::EX_IOERR, &format!("write error: {e}"));
    }
    std::process::exit(i32::from(failed));
}

/// Prints one file; false on any error (already reported).
fn print(path: &Path, show: Show, out: &mut dyn Write) -> bool {
    let opts = DumpOptions {
        envelope: show.envelope,
        content: show.header && show.body,
        offsets: show.offsets,
    };
    if opts.content {
        return match dump(path, out, &opts) {
            Ok(()) => true,
            Err(e) => {
                oxipost_log::warning!("{}: {e}", path.display());
                false
            }
        };
    }
    // Header or body only: the envelope part from dump, then the selected content part.
    let mut env = Vec::new();
    let r = dump(path, &mut env, &opts);
    let text = String::from_utf8_lossy(&env);
    let end_line = format!("*** MESSAGE FILE END {} ***", path.display());
    let envelope = text.replace(&format!("{end_line}\n"), "");
    let _ = out.write_all(envelope.as_bytes());
    if let Err(e) = r {
        oxipost_log::warning!("{}: {e}", path.display());
        return false;
    }
    let qf = match QueueFile::open_partial(path) {
        Ok(q) => q,
        Err(e) => {
            oxipost_log::warning!("{}: {e}", path.display());
            return false;
        }
    };
    let mut content = Vec::new();
    if let Err(e) = qf.content().read_to_end(&mut content) {
        oxipost_log::warning!("{}: {e}", path.display());
        return false;
    }
    let (head, body) = split(&content);
    let _ = writeln!(out, "*** MESSAGE CONTENTS {} ***", path.display());
    if show.header {
        let _ = out.write_all(head);
    }
    if show.body {
        let _ = out.write_all(body);
    }
    if show.body && !body.is_empty() && !body.ends_with(b"\n") {
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "{end_line}");
    true
}

/// Splits content at the empty line that ends the header (the empty line goes to
/// neither part).
fn split(content: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < content.len() {
        let end = content[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |p| pos + p + 1);
        let line = &content[pos..end];
        if line == b"\n" || line == b"\r\n" {
            return (&content[..pos], &content[end..]);
        }
        pos = end;
    }
    (content, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_header_body() {
        assert_eq!(
            split(b"A: b\r\n\r\nbody\r\n"),
            (&b"A: b\r\n"[..], &b"body\r\n"[..])
        );
        assert_eq!(split(b"A: b\n"), (&b"A: b\n"[..], &b""[..]));
        assert_eq!(split(b"\nbody"), (&b""[..], &b"body"[..]));
    }
}
