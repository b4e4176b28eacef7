//! imapd's command framer and parser (`crates/imapd/src/parse.rs`, compiled in here by path
//! because imapd is a binary crate), the sequence-set parser and modified UTF-7 decoding:
//! any byte stream, cut into two feeds at a point the input chooses, must never panic,
//! and every framed command must parse or give a syntax error.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/imapd/src/parse.rs"]
mod parse;
#[allow(dead_code)]
#[path = "../../crates/imapd/src/utf7.rs"]
mod utf7;

use libfuzzer_sys::fuzz_target;
use parse::{Frame, Framer, Value};

fn walk(v: &Value) {
    match v {
        Value::Atom(a) => {
            let _ = parse::sequence_set(a, 1000);
            let _ = parse::sequence_set(a, u32::MAX);
            if let Some(s) = utf7::decode(a) {
                // What decodes must encode back to something that decodes the same.
                assert_eq!(utf7::decode(&utf7::encode(&s)).as_deref(), Some(s.as_str()));
            }
        }
        Value::Str(s) => {
            let mut out = Vec::new();
            parse::astring(&mut out, Some(s));
        }
        Value::List(l) => l.iter().for_each(walk),
    }
}

fuzz_target!(|data: &[u8]| {
    let (cut, rest) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c), rest),
        None => return,
    };
    let cut = cut.min(rest.len());
    let mut f = Framer::new(1024, 4096);
    for part in [&rest[..cut], &rest[cut..]] {
        f.feed(part);
        while let Some(frame) = f.next() {
            if let Frame::Command(raw) = frame {
                if let Ok(c) = parse::command(&raw) {
                    c.args.iter().for_each(walk);
                }
            }
        }
    }
    // The whole input as one command, without the framer's limits.
    let _ = parse::command(rest);
});
