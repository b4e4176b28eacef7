//! smtpd's sans-IO session (`oxipost-smtp-proto`): any client byte stream, with the driver
//! accepting every decision, must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxipost_smtp_proto::{ServerConfig, Session, Step};

fuzz_target!(|data: &[u8]| {
    let mut s = Session::new(ServerConfig::new("mx.example.test"));
    s.greet();
    for chunk in data.split_inclusive(|&b| b == b'\n') {
        s.feed(chunk);
        for _ in 0..1000 {
            match s.next() {
                Step::NeedInput | Step::Close => break,
                Step::Output(_) => {}
                Step::Event(_) => {
                    if s.decision_pending() {
                        let _ = s.accept();
                    }
                }
            }
        }
    }
});
