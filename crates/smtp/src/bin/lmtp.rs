//! `lmtp`: oxipost's lmtp(8) delivery agent, the `smtp` program in LMTP mode.

fn main() -> std::process::ExitCode {
    oxipost_smtp::main("lmtp")
}
