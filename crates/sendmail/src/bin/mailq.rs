//! mailq(1): the same program as sendmail(1), started under the name mailq.

fn main() {
    oxipost_sendmail::run(oxipost_sendmail::Personality::Mailq)
}
