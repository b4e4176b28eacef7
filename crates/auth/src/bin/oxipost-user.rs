//! `oxipost-user`: manages the SQLite virtual users of the authentication service (the
//! `sqlite:` entry of `auth_passdb`, or `--db`). Passwords are read from standard input
//! (one line), never from the command line, and stored as `{SHA512-CRYPT}` hashes (or
//! another scheme with `--scheme`: `SCRAM-SHA-256` lets SCRAM clients log in, `PLAIN`
//! also CRAM-MD5 and APOP).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oxipost_auth::sqlite::{UserDb, split_login};
use oxipost_config::Config;

#[derive(Parser, Debug)]
#[command(name = "oxipost-user", about = "Manage oxipost's SQLite virtual users")]
struct Cli {
    /// Configuration directory (default: $MAIL_CONFIG, else /etc/oxipost).
    #[arg(short = 'c')]
    config_dir: Option<PathBuf>,
    /// The user database (default: the sqlite: entry of auth_passdb).
    #[arg(long)]
    db: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Add user@domain; the password is read from standard input.
    Add {
        login: String,
        /// Mailbox path relative to the virtual mailbox base (default: domain/user/).
        #[arg(long)]
        mailbox: Option<String>,
        /// Quota in bytes (0: none).
        #[arg(long, default_value_t = 0)]
        quota: i64,
        /// Password scheme: SHA512-CRYPT, BLF-CRYPT, ARGON2ID, SCRAM-SHA-256 or PLAIN.
        #[arg(short = 's', long, default_value = "SHA512-CRYPT")]
        scheme: String,
    },
    /// Change a password (read from standard input).
    Passwd {
        login: String,
        #[arg(short = 's', long, default_value = "SHA512-CRYPT")]
        scheme: String,
    },
    /// Remove a user.
    Del { login: String },
    /// Disable a user (logins fail; the data stays).
    Disable { login: String },
    /// Enable a disabled user.
    Enable { login: String },
    /// List users, of one domain or all.
    List { domain: Option<String> },
    /// Check a password (standard input) against the password databases, like `doveadm
    /// auth test`: exit 0 when it is right, 1 when wrong, 2 when the database failed.
    Test {
        user: String,
        /// Password databases to ask (default: auth_passdb), e.g. `shadow`.
        #[arg(long)]
        passdb: Vec<String>,
    },
    /// Print a hash of the password on standard input (like `doveadm pw`), for
    /// passwd-files: SHA512-CRYPT, BLF-CRYPT, ARGON2ID, SCRAM-SHA-256 or PLAIN.
    Hash {
        #[arg(short = 's', long, default_value = "SHA512-CRYPT")]
        scheme: String,
    },
    /// Domains: add, del, list.
    Domain {
        #[command(subcommand)]
        cmd: DomainCmd,
    },
}

#[derive(Subcommand, Debug)]
enum DomainCmd {
    Add {
        domain: String,
    },
    /// Remove a domain and all its users.
    Del {
        domain: String,
    },
    List,
}

fn db_path(cli: &Cli) -> Result<PathBuf, String> {
    if let Some(p) = &cli.db {
        return Ok(p.clone());
    }
    let (dir, explicit) = Config::resolve_dir(cli.config_dir.as_deref());
    let cfg = Config::load(&dir, explicit).map_err(|e| e.to_string())?;
    let dbs = cfg.get_list("auth_passdb").map_err(|e| e.to_string())?;
    dbs.iter()
        .find_map(|d| d.strip_prefix("sqlite:").map(PathBuf::from))
        .ok_or_else(|| {
            format!(
                "{}/main.cf: auth_passdb has no sqlite: database (or use --db)",
                dir.display()
            )
        })
}

fn auth_test(cli: &Cli, user: &str, passdb: &[String]) -> Result<(), String> {
    use oxipost_auth::passdb::{Defaults, PassDb, Verdict, verify};
    let specs = if passdb.is_empty() {
        let (dir, explicit) = Config::resolve_dir(cli.config_dir.as_deref());
        let cfg = Config::load(&dir, explicit).map_err(|e| e.to_string())?;
        cfg.get_list("auth_passdb").map_err(|e| e.to_string())?
    } else {
        passdb.to_vec()
    };
    let dbs = specs
        .iter()
        .map(|s| PassDb::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    match verify(&dbs, user, &read_password()?, Defaults::default()) {
        Verdict::Ok(info) => {
            println!(
                "passdb: {} auth succeeded (uid={} gid={} home={} mail={})",
                info.user, info.uid, info.gid, info.home, info.mail
            );
            Ok(())
        }
        Verdict::Mismatch | Verdict::NoUser => {
            println!("passdb: {user} auth failed");
            std::process::exit(1)
        }
        Verdict::Unavailable(e) => {
            eprintln!("oxipost-user: {e}");
            std::process::exit(2)
        }
    }
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("read password: {e}"))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        return Err("empty password on standard input".into());
    }
    Ok(pw)
}

fn run(cli: Cli) -> Result<(), String> {
    if let Cmd::Test { user, passdb } = &cli.cmd {
        return auth_test(&cli, user, passdb);
    }
    if let Cmd::Hash { scheme } = &cli.cmd {
        println!("{}", oxipost_auth::scheme::hash(scheme, &read_password()?)?);
        return Ok(());
    }
    let path = db_path(&cli)?;
    let db = UserDb::open_rw(&path)?;
    let must = |found: bool, what: &str| {
        if found {
            Ok(())
        } else {
            Err(format!("{what}: no such user or domain"))
        }
    };
    match &cli.cmd {
        Cmd::Add {
            login,
            mailbox,
            quota,
            scheme,
        } => {
            let (u, d) = split_login(login).ok_or_else(|| format!("{login}: not user@domain"))?;
            let hash = oxipost_auth::scheme::hash(scheme, &read_password()?)?;
            let mb = mailbox.clone().unwrap_or_else(|| format!("{d}/{u}/"));
            db.add_user(login, &hash, &mb, *quota)
        }
        Cmd::Passwd { login, scheme } => {
            let hash = oxipost_auth::scheme::hash(scheme, &read_password()?)?;
            must(db.set_password(login, &hash)?, login)
        }
        Cmd::Del { login } => must(db.del_user(login)?, login),
        Cmd::Disable { login } => must(db.set_enabled(login, false)?, login),
        Cmd::Enable { login } => must(db.set_enabled(login, true)?, login),
        Cmd::List { domain } => {
            for u in db.users(domain.as_deref())? {
                println!(
                    "{}\t{}\tquota={}\t{}",
                    u.login(),
                    u.mailbox,
                    u.quota,
                    if u.enabled { "enabled" } else { "disabled" }
                );
            }
            Ok(())
        }
        Cmd::Hash { .. } | Cmd::Test { .. } => Ok(()),
        Cmd::Domain { cmd } => match cmd {
            DomainCmd::Add { domain } => db.add_domain(domain),
            DomainCmd::Del { domain } => must(db.del_domain(domain)?, domain),
            DomainCmd::List => {
                for (d, enabled) in db.domains()? {
                    println!("{d}\t{}", if enabled { "enabled" } else { "disabled" });
                }
                Ok(())
            }
        },
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxipost-user: {e}");
            ExitCode::FAILURE
        }
    }
}
