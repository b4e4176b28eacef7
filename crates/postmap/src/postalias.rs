//! postalias(1): postmap for aliases(5) files (see the library documentation).
fn main() -> std::process::ExitCode {
    oxipost_postmap::main_with(oxipost_postmap::Tool::Postalias)
}
