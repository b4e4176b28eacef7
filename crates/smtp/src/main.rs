//! `smtp`: oxipost's smtp(8) delivery agent (see the library crate documentation).

fn main() -> std::process::ExitCode {
    oxipost_smtp::main("smtp")
}
