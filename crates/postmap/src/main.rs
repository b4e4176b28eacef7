//! postmap(1): build, query and edit lookup tables (see the library documentation).
fn main() -> std::process::ExitCode {
    oxipost_postmap::main_with(oxipost_postmap::Tool::Postmap)
}
