//! sendmail(1): see the library documentation of `oxipost-sendmail`.

fn main() {
    let name = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let p = match name.as_str() {
        "mailq" => oxipost_sendmail::Personality::Mailq,
        "newaliases" => oxipost_sendmail::Personality::Newaliases,
        _ => oxipost_sendmail::Personality::Sendmail,
    };
    oxipost_sendmail::run(p)
}
