//! Sendmail's command line, parsed by hand: single-letter options may be grouped
//! (`-ti`), option arguments may be attached or separate (`-ffoo`, `-f foo`), `-o` and `-b`
//! take their sub-option letter attached (`-oi`, `-bs`), `-q` takes an optional attached
//! interval, and everything after the options (or after `--`) is a recipient.

/// What sendmail is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `-bm` (default): deliver a message read from standard input.
    #[default]
    Deliver,
    /// `-bs`: SMTP on standard input and output.
    Smtp,
    /// `-bp`: list the queue (mailq).
    ListQueue,
    /// `-bi`: rebuild the alias database (newaliases).
    Newaliases,
    /// `-q`: flush the queue.
    Flush,
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub mode: Mode,
    pub extract: bool,
    pub sender: Option<String>,
    pub full_name: Option<String>,
    pub ignore_dots: bool,
    pub notify: Option<String>,
    pub ret: Option<String>,
    pub body: Option<String>,
    pub envid: Option<String>,
    pub config: Option<String>,
    pub verbose: bool,
    pub help: bool,
    pub recipients: Vec<String>,
}

/// Options whose argument follows (attached or as the next word).
const WITH_ARG: &[char] = &['f', 'r', 'F', 'N', 'R', 'B', 'V', 'C', 'X', 'L', 'h', 'O'];

/// Parses `argv` without the program name. Errors are usage texts.
pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let word = &argv[i];
        i += 1;
        if word == "--" {
            break;
        }
        if word == "--help" {
            a.help = true;
            continue;
        }
        let Some(opts) = word.strip_prefix('-').filter(|o| !o.is_empty()) else {
            i -= 1;
            break;
        };
        for (pos, c) in opts.char_indices() {
            let rest = &opts[pos + c.len_utf8()..];
            if WITH_ARG.contains(&c) {
                let value = if !rest.is_empty() {
                    rest.to_string()
                } else if i < argv.len() {
                    i += 1;
                    argv[i - 1].clone()
                } else {
                    return Err(format!("option requires an argument -- '{c}'"));
                };
                match c {
                    'f' | 'r' => a.sender = Some(value),
                    'F' => a.full_name = Some(value),
                    'N' => a.notify = Some(value),
                    'R' => a.ret = Some(value),
                    'B' => a.body = Some(value),
                    'V' => a.envid = Some(value),
                    'C' => a.config = Some(value),
                    // -X log file, -L label, -h hop count, -O option=value: ignored.
                    _ => {}
                }
                break;
            }
            match c {
                't' => a.extract = true,
                'i' => a.ignore_dots = true,
                'v' => a.verbose = true,
                'o' => {
                    // -oi: ignore dots; -oXvalue: Sendmail options, ignored (as Postfix).
                    if rest.starts_with('i') {
                        a.ignore_dots = true;
                    } else if rest.is_empty() {
                        // `-o x` with the option letter in the next word.
                        if i < argv.len() {
                            if argv[i].starts_with('i') {
                                a.ignore_dots = true;
                            }
                            i += 1;
                        }
                    }
                    break;
                }
                'b' => {
                    a.mode = match rest.chars().next() {
                        Some('m') | None => Mode::Deliver,
                        Some('s') => Mode::Smtp,
                        Some('p') => Mode::ListQueue,
                        Some('i') => Mode::Newaliases,
                        // -bd (daemon) and -bD are master's job; -bv/-bh are not supported.
                        Some(other) => return Err(format!("unsupported: -b{other}")),
                    };
                    break;
                }
                'q' => {
                    // -q, -q30m, -qR site, -qS site: all mean "flush now" here.
                    if (rest.starts_with('R') || rest.starts_with('S')) && rest.len() == 1 {
                        i += 1;
                    }
                    a.mode = Mode::Flush;
                    break;
                }
                // Accepted and ignored, as by Postfix: -n, -m, -U, -G, -A..., -8, -d debug.
                'n' | 'm' | 'U' | 'G' | '8' => {}
                'A' | 'd' => break,
                other => return Err(format!("invalid option -- '{other}'")),
            }
        }
    }
    a.recipients = argv[i..].to_vec();
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Args {
        parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parses")
    }

    #[test]
    fn sendmail_option_forms() {
        let a = p(&["-t", "-oi", "-fme@x", "-F", "Me Too", "a@b", "c"]);
        assert!(a.extract && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("me@x"));
        assert_eq!(a.full_name.as_deref(), Some("Me Too"));
        assert_eq!(a.recipients, ["a@b", "c"]);
        let a = p(&["-ti", "-f", "", "--", "-x@y"]);
        assert!(a.extract && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some(""));
        assert_eq!(a.recipients, ["-x@y"]);
        assert_eq!(p(&["-bs"]).mode, Mode::Smtp);
        assert_eq!(p(&["-bp"]).mode, Mode::ListQueue);
        assert_eq!(p(&["-q"]).mode, Mode::Flush);
        assert_eq!(p(&["-q30m"]).mode, Mode::Flush);
        let a = p(&[
            "-odb",
            "-oem",
            "-N",
            "success,delay",
            "-R",
            "hdrs",
            "-v",
            "x",
        ]);
        assert_eq!(a.notify.as_deref(), Some("success,delay"));
        assert_eq!(a.recipients, ["x"]);
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["-f".to_string()]).is_err());
        assert!(parse(&["-Z".to_string()]).is_err());
        assert!(parse(&["-bz".to_string()]).is_err());
    }
}
