//! The command line master gives a worker (see [`crate::proto`]).

/// What master said about the service this process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceArgs {
    /// master.cf service name (`-n`).
    pub name: String,
    /// master.cf service type (`-t`).
    pub kind: String,
    /// Drop to `mail_owner` (`-u`).
    pub unprivileged: bool,
    /// chroot into `queue_directory` (`-r`).
    pub chroot: bool,
    /// `-o name=value` overrides, in order.
    pub overrides: Vec<(String, String)>,
    /// `-v` count.
    pub verbose: u32,
    /// Remaining arguments from master.cf, for the service itself.
    pub args: Vec<String>,
}

/// Parses `-n name -t type [-u] [-r] [-v] [-o name=value]... [--] args...`.
pub fn parse(argv: &[String]) -> Result<ServiceArgs, String> {
    let mut a = ServiceArgs::default();
    let mut it = argv.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-n" => a.name = it.next().ok_or("-n needs a service name")?.clone(),
            "-t" => a.kind = it.next().ok_or("-t needs a service type")?.clone(),
            "-u" => a.unprivileged = true,
            "-r" => a.chroot = true,
            "-v" => a.verbose += 1,
            "-o" => {
                let nv = it.next().ok_or("-o needs name=value")?;
                let (n, v) = nv
                    .split_once('=')
                    .ok_or_else(|| format!("-o {nv}: missing '='"))?;
                a.overrides
                    .push((n.trim().to_string(), v.trim().to_string()));
            }
            "--" => {
                a.args.extend(it.by_ref().cloned());
            }
            _ => a.args.push(w.clone()),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_master_argv() {
        let a = parse(&v(&[
            "-n",
            "smtp",
            "-t",
            "inet",
            "-u",
            "-o",
            "smtpd_banner=hi there",
            "-v",
            "extra",
        ]))
        .expect("parses");
        assert_eq!(a.name, "smtp");
        assert_eq!(a.kind, "inet");
        assert!(a.unprivileged && !a.chroot);
        assert_eq!(
            a.overrides,
            vec![("smtpd_banner".into(), "hi there".into())]
        );
        assert_eq!(a.verbose, 1);
        assert_eq!(a.args, vec!["extra"]);
        assert!(parse(&v(&["-o", "novalue"])).is_err());
        assert!(parse(&v(&["-n"])).is_err());
    }
}
