//! pop3d's sans-IO session (`oxipost-pop3-proto`): any client byte stream, with the driver
//! accepting every login and answering every event, must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxipost_pop3_proto::{Config, Event, Message, Session, Step};

fuzz_target!(|data: &[u8]| {
    let mut cfg = Config::new();
    cfg.stls = true;
    cfg.secured = true;
    cfg.apop_timestamp = Some("<1.2@host>".to_owned());
    let mut s = Session::new(cfg);
    let mut out = Vec::new();
    s.greet(&mut out);
    for chunk in data.split_inclusive(|&b| b == b'\n') {
        s.feed(chunk);
        for _ in 0..1000 {
            out.clear();
            match s.next(&mut out) {
                Step::NeedInput | Step::Close => break,
                Step::Wait => break,
                Step::Event(Event::Authenticate { .. })
                | Step::Event(Event::AuthResponse { .. }) => {
                    let msgs = vec![
                        Message {
                            size: 10,
                            uid: "a".into(),
                        },
                        Message {
                            size: 20,
                            uid: "b".into(),
                        },
                    ];
                    s.logged_in(msgs, &mut out);
                }
                Step::Event(Event::StartTls) => s.tls_started(),
                Step::Event(Event::Retrieve { .. }) => {
                    s.message(Ok(b"Subject: x\n\n.line\nbody\n"), &mut out)
                }
                Step::Event(Event::Update { deleted }) => {
                    s.updated(Ok(deleted.len() as u64), &mut out)
                }
            }
        }
    }
});
