//! postconf(1): prints and edits main.cf and master.cf with Postfix's flags and output.

use clap::{ArgAction, Parser};
use oxipost_config::edit::{self, MainEdit, MasterEdit};
use oxipost_config::mastercf::FIELD_NAMES;
use oxipost_config::{Config, ConfigError, MainCf, MasterCf, PARAMS, Source};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Lookup table types this build of the suite implements (`postconf -m`).
const MAP_TYPES: &[&str] = oxipost_maps::MAP_TYPES;

/// SASL mechanisms of the server (`-a`) and client (`-A`) side, once they exist.
const SERVER_SASL: &[&str] = &["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"];
const CLIENT_SASL: &[&str] = &[];

#[derive(Parser, Debug)]
#[command(
    name = "postconf",
    about = "Show or edit the oxipost configuration (main.cf, master.cf), as Postfix's postconf",
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Args {
    /// Use main.cf and master.cf in this directory (else $MAIL_CONFIG, else /etc/oxipost).
    #[arg(short = 'c', value_name = "config_dir", overrides_with = "config_dir")]
    config_dir: Option<PathBuf>,
    /// Show default values instead of the values in effect.
    #[arg(short = 'd')]
    defaults: bool,
    /// Edit main.cf: set each name=value (or, with -M, replace master.cf entries).
    #[arg(short = 'e')]
    edit: bool,
    /// Fold long lines (with -M).
    #[arg(short = 'f')]
    fold: bool,
    /// Show values only, without "name = ".
    #[arg(short = 'h')]
    hide_name: bool,
    /// Show lookup table types.
    #[arg(short = 'm')]
    maps: bool,
    /// Show only parameters set in main.cf (or master.cf -o), not defaults.
    #[arg(short = 'n')]
    non_default: bool,
    /// Expand $name in values.
    #[arg(short = 'x')]
    expand: bool,
    /// Remove the named parameters (or master.cf entries with -M).
    #[arg(short = 'X')]
    remove: bool,
    /// Comment out the named parameters (or master.cf entries with -M).
    #[arg(short = '#')]
    comment: bool,
    /// Show (or with -e/-X/-#, edit) master.cf entries.
    #[arg(short = 'M')]
    master: bool,
    /// Show master.cf fields as service/type/field = value.
    #[arg(short = 'F')]
    fields: bool,
    /// Show master.cf -o parameters as service/type/name = value.
    #[arg(short = 'P')]
    master_params: bool,
    /// Show the server-side SASL mechanisms.
    #[arg(short = 'a')]
    server_sasl: bool,
    /// Show the client-side SASL mechanisms.
    #[arg(short = 'A')]
    client_sasl: bool,
    /// Verbose (accepted for compatibility).
    #[arg(short = 'v', action = ArgAction::Count)]
    verbose: u8,
    /// Print postconf(5) in roff, generated from the parameter table.
    #[arg(long = "man", hide = true)]
    man: bool,
    /// Print help.
    #[arg(long = "help", action = ArgAction::Help)]
    help: Option<bool>,
    /// Parameter names, name=value assignments, or master.cf service/type keys.
    names: Vec<String>,
}

fn warn(msg: impl std::fmt::Display) {
    eprintln!("postconf: warning: {msg}");
}

fn fatal(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("postconf: fatal: {msg}");
    ExitCode::from(1)
}

/// Writes text to stdout as the file's own bytes (see `maincf::encode`).
fn print_bytes(text: &str, latin1: bool) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(&oxipost_config::maincf::encode(text, latin1));
}

/// Flag combinations Postfix refuses, with its kind of message.
fn check_flags(args: &Args) -> Result<(), String> {
    let edits = [args.edit, args.remove, args.comment]
        .iter()
        .filter(|&&b| b)
        .count();
    if edits > 1 {
        return Err("specify only one of -e, -X and -#".into());
    }
    if edits == 1 && args.names.is_empty() {
        return Err("-e, -X and -# require one or more arguments".into());
    }
    if (args.remove || args.comment) && !args.master && args.names.iter().any(|n| n.contains('=')) {
        return Err(format!(
            "-X and -# require parameter names without \"=value\": \"{}\"",
            args.names
                .iter()
                .find(|n| n.contains('='))
                .map_or("", |n| n.as_str())
        ));
    }
    if args.non_default && args.defaults {
        return Err("specify only one of -d and -n".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Err(msg) = check_flags(&args) {
        return fatal(msg);
    }
    if args.man {
        print!("{}", oxipost_config::man::postconf5());
        return ExitCode::SUCCESS;
    }
    if args.maps {
        for t in MAP_TYPES {
            println!("{t}");
        }
        return ExitCode::SUCCESS;
    }
    if args.server_sasl || args.client_sasl {
        let list = if args.server_sasl {
            SERVER_SASL
        } else {
            CLIENT_SASL
        };
        for m in list {
            println!("{m}");
        }
        return ExitCode::SUCCESS;
    }
    let (dir, explicit) = Config::resolve_dir(args.config_dir.as_deref());
    let result = if args.master || args.fields || args.master_params {
        master_mode(&args, &dir)
    } else if args.edit || args.remove || args.comment {
        edit_main_cf(&args, &dir)
    } else {
        show(&args, &dir, explicit)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fatal(msg),
    }
}

fn load_config(dir: &Path, explicit: bool, tolerate_missing: bool) -> Result<Config, String> {
    match Config::load(dir, explicit) {
        Ok(c) => Ok(c),
        Err(ConfigError::Io { .. }) if tolerate_missing => {
            Ok(Config::from_main(dir, MainCf::default(), explicit))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Prints parameters: all in effect, the named ones, only non-defaults, or defaults.
fn show(args: &Args, dir: &Path, explicit: bool) -> Result<(), String> {
    let cfg = load_config(dir, explicit, args.defaults)?;
    let main_path = cfg.main.path.display().to_string();
    for w in &cfg.main.warnings {
        warn(w);
    }
    for (old, new) in cfg.main.overridden() {
        warn(format!(
            "{}:{}: overriding earlier entry: {}={}",
            main_path, new.first, old.name, old.value
        ));
    }
    let referenced = cfg.referenced_names();
    let is_used = |name: &str| cfg.is_known(name) || referenced.iter().any(|r| r == name);
    // Report what Postfix reports: undefined references (in parameters that are used:
    // unused ones are never expanded) and unused user parameters.
    if !args.defaults {
        for e in &cfg.main.entries {
            // Postfix checks the values of the parameters it knows; user-defined ones are
            // expanded only when asked for (-x).
            if !cfg.is_known(&e.name) || cfg.main.get(&e.name) != Some(e.value.as_str()) {
                continue;
            }
            match cfg.expand(&e.value) {
                Ok(ex) => {
                    for u in ex.undefined {
                        warn(format!("{main_path}: undefined parameter: {u}"));
                    }
                }
                Err(err) => {
                    return Err(format!("{}:{}: {}: {}", main_path, e.first, e.name, err));
                }
            }
        }
        for name in cfg.main.names() {
            if !is_used(name) {
                let v = cfg.main.get(name).unwrap_or("");
                warn(format!("{main_path}: unused parameter: {name}={v}"));
            }
        }
    }

    let names: Vec<String> = if !args.names.is_empty() {
        args.names.clone()
    } else if args.non_default && !args.defaults {
        let mut v: Vec<String> = cfg
            .main
            .names()
            .into_iter()
            .filter(|n| is_used(n))
            .map(String::from)
            .collect();
        for (n, _) in cfg.overrides() {
            if !v.contains(n) {
                v.push(n.clone());
            }
        }
        v.sort();
        v
    } else {
        let mut v: Vec<String> = PARAMS.iter().map(|p| p.name.to_string()).collect();
        if !args.defaults {
            for n in cfg.main.names() {
                if is_used(n) && !v.iter().any(|x| x == n) {
                    v.push(n.to_string());
                }
            }
        }
        v.sort();
        v
    };

    let mut out = String::new();
    for name in &names {
        let value = if args.defaults {
            cfg.default_raw(name)
        } else {
            match cfg.raw_with_source(name) {
                Some((v, Source::MainCf)) if !is_used(name) => {
                    let _ = v;
                    None
                }
                Some((v, _)) => Some(v),
                None => None,
            }
        };
        let Some(value) = value else {
            warn(format!("{name}: unknown parameter"));
            continue;
        };
        let value = if args.expand {
            cfg.expand(&value)
                .map_err(|e| format!("{name}: {e}"))?
                .value
        } else {
            value
        };
        // Postfix prints every value with white space runs folded to one space.
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        if args.hide_name {
            out.push_str(&value);
        } else if value.is_empty() {
            out.push_str(&format!("{name} ="));
        } else {
            out.push_str(&format!("{name} = {value}"));
        }
        out.push('\n');
    }
    print_bytes(&out, cfg.main.latin1);
    Ok(())
}

fn edit_main_cf(args: &Args, dir: &Path) -> Result<(), String> {
    let path = dir.join("main.cf");
    // Like Postfix, edit whatever is there (even a file with a malformed line), but
    // never create main.cf: a missing one usually means a wrong -c.
    let bytes = std::fs::read(&path).map_err(|e| format!("open {}: {}", path.display(), e))?;
    let (text, latin1) = oxipost_config::maincf::decode(&bytes);
    let edit = if args.edit {
        let mut pairs = Vec::new();
        for a in &args.names {
            pairs.push(edit::parse_assignment(a)?);
        }
        MainEdit::Set(pairs)
    } else if args.remove {
        MainEdit::Remove(args.names.clone())
    } else {
        MainEdit::CommentOut(args.names.clone())
    };
    let new = edit::edit_main(&text, &edit);
    if new != text {
        edit::write_atomically(&path, &oxipost_config::maincf::encode(&new, latin1))
            .map_err(|e| format!("write {}: {}", path.display(), e))?;
    }
    Ok(())
}

/// Splits a `service/type[/rest]` selector.
fn selector(s: &str) -> (String, Option<String>, Option<String>) {
    let mut parts = s.splitn(3, '/');
    let name = parts.next().unwrap_or("").to_string();
    let kind = parts.next().map(String::from);
    let rest = parts.next().map(String::from);
    (name, kind, rest)
}

fn master_mode(args: &Args, dir: &Path) -> Result<(), String> {
    let path = dir.join("master.cf");
    if args.master && (args.edit || args.remove || args.comment) {
        return edit_master_cf(args, &path);
    }
    if (args.fields || args.master_params) && (args.edit || args.remove) {
        return edit_master_fields(args, &path);
    }
    let master = match MasterCf::load(&path) {
        Ok(m) => m,
        Err(ConfigError::Io { error, .. }) => {
            warn(format!("open {}: {}", path.display(), error));
            MasterCf::default()
        }
        Err(e) => return Err(e.to_string()),
    };
    let selected = |s: &oxipost_config::Service| -> Option<Option<String>> {
        if args.names.is_empty() {
            return Some(None);
        }
        for n in &args.names {
            let (name, kind, rest) = selector(n);
            let name_ok = name.is_empty() || name == s.name;
            let kind_ok = kind
                .as_deref()
                .is_none_or(|k| k.is_empty() || k == s.kind.as_str());
            if name_ok && kind_ok {
                return Some(rest);
            }
        }
        None
    };
    let mut out = String::new();
    for s in &master.services {
        let Some(rest) = selected(s) else { continue };
        if args.master {
            if args.fold {
                out.push_str(&fold(&s.format_line()));
            } else {
                out.push_str(&s.format_line());
                out.push('\n');
            }
        } else if args.fields {
            for (i, f) in FIELD_NAMES.iter().enumerate() {
                if rest.as_deref().is_some_and(|r| r != *f) {
                    continue;
                }
                let value = if i == 7 {
                    s.fields[7..].join(" ")
                } else {
                    s.fields[i].clone()
                };
                out.push_str(&format!("{}/{}/{} = {}\n", s.name, s.kind, f, value));
            }
        } else {
            for (n, v) in &s.overrides {
                if rest.as_deref().is_some_and(|r| r != n) {
                    continue;
                }
                out.push_str(&format!("{}/{}/{} = {}\n", s.name, s.kind, n, v));
            }
        }
    }
    print!("{out}");
    Ok(())
}

/// Folds an entry as `postconf -Mf`: `-o` options on their own indented lines.
fn fold(line: &str) -> String {
    let mut out = String::new();
    let mut first = true;
    for part in line.split(" -o ") {
        if first {
            out.push_str(part);
            first = false;
        } else {
            out.push_str("\n    -o ");
            out.push_str(part);
        }
    }
    out.push('\n');
    out
}

/// Renders an edited entry as Postfix writes it: the fields in `-M` columns, the command
/// and its arguments, then each `-o` setting on a continuation line.
fn render_entry(fields: &[String], overrides: &[(String, String)], args: &[String]) -> String {
    let mut s = oxipost_config::mastercf::columns(fields);
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    for (n, v) in overrides {
        s.push_str(&format!("\n    -o {n}={v}"));
    }
    s
}

/// `-Fe service/type/field=value`, `-Pe service/type/name=value`, `-PX service/type/name`.
fn edit_master_fields(args: &Args, path: &Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("open {}: {}", path.display(), e))?;
    let master = MasterCf::parse(path, &text).map_err(|e| e.to_string())?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for a in &args.names {
        let (sel, value) = match a.split_once('=') {
            Some((s, v)) => (s.trim(), Some(v.trim())),
            None => (a.trim(), None),
        };
        let (name, kind, rest) = selector(sel);
        let (Some(kind), Some(rest)) = (kind, rest) else {
            return Err(format!("invalid service/type/name: \"{sel}\""));
        };
        let key = format!("{name}/{kind}");
        let current = pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, e)| e.clone());
        let svc = match &current {
            Some(line) => MasterCf::parse(path, line)
                .ok()
                .and_then(|m| m.services.into_iter().next()),
            None => master.services.iter().find(|s| s.key() == key).cloned(),
        }
        .ok_or_else(|| format!("no master.cf entry for \"{key}\""))?;
        let mut fields: Vec<String> = svc.fields.iter().take(8).cloned().collect();
        let mut cmd_args = svc.args.clone();
        let mut overrides = svc.overrides.clone();
        if args.fields {
            let value = value.ok_or_else(|| format!("-F requires field=value: \"{a}\""))?;
            let idx = FIELD_NAMES
                .iter()
                .position(|f| *f == rest)
                .ok_or_else(|| format!("invalid field name: \"{rest}\""))?;
            if idx == 7 {
                let mut words = value.split_whitespace().map(String::from);
                fields[7] = words.next().ok_or("empty command")?;
                cmd_args = words.collect();
                overrides.clear();
            } else {
                fields[idx] = value.to_string();
            }
        } else if args.edit {
            let value = value.ok_or_else(|| format!("-Pe requires name=value: \"{a}\""))?;
            if value.contains(char::is_whitespace) {
                return Err("-Pe does not accept whitespace in parameter value".into());
            }
            match overrides.iter_mut().find(|(n, _)| n == &rest) {
                Some(o) => o.1 = value.to_string(),
                None => overrides.push((rest.clone(), value.to_string())),
            }
        } else {
            overrides.retain(|(n, _)| n != &rest);
        }
        if overrides
            .iter()
            .any(|(_, v)| v.contains(char::is_whitespace))
        {
            return Err(format!(
                "\"{key}\": an -o value with white space cannot be edited here"
            ));
        }
        let line = render_entry(&fields, &overrides, &cmd_args);
        // The result must still be a valid entry for the same service.
        let check = MasterCf::parse(Path::new("master.cf"), &line).map_err(|e| e.to_string())?;
        if check.services.first().map(|s| s.key()) != Some(key.clone()) {
            return Err(format!("edit would change the service key of \"{key}\""));
        }
        pairs.retain(|(k, _)| *k != key);
        pairs.push((key, line));
    }
    let new = edit::edit_master(&text, &MasterEdit::Set(pairs));
    MasterCf::parse(path, &new).map_err(|e| format!("edit would break master.cf: {e}"))?;
    if new != text {
        edit::write_atomically(path, new.as_bytes())
            .map_err(|e| format!("write {}: {}", path.display(), e))?;
    }
    Ok(())
}

fn edit_master_cf(args: &Args, path: &Path) -> Result<(), String> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.edit => String::new(),
        Err(e) => return Err(format!("open {}: {}", path.display(), e)),
    };
    MasterCf::parse(path, &text).map_err(|e| e.to_string())?;
    let edit = if args.edit {
        let mut pairs = Vec::new();
        for a in &args.names {
            let (key, entry) = a
                .split_once('=')
                .ok_or_else(|| format!("-Me requires service/type=entry: \"{a}\""))?;
            let entry = entry.trim();
            // The new entry must itself be a valid master.cf line for the same service.
            let parsed = MasterCf::parse(Path::new("-Me"), entry).map_err(|e| e.to_string())?;
            match parsed.services.as_slice() {
                [s] if s.key() == key.trim() => {}
                _ => {
                    return Err(format!(
                        "entry does not define {}: \"{}\"",
                        key.trim(),
                        entry
                    ));
                }
            }
            pairs.push((key.trim().to_string(), entry.to_string()));
        }
        MasterEdit::Set(pairs)
    } else if args.remove {
        MasterEdit::Remove(args.names.clone())
    } else {
        MasterEdit::CommentOut(args.names.clone())
    };
    let new = edit::edit_master(&text, &edit);
    MasterCf::parse(path, &new).map_err(|e| format!("edit would break master.cf: {e}"))?;
    if new != text {
        edit::write_atomically(path, new.as_bytes())
            .map_err(|e| format!("write {}: {}", path.display(), e))?;
    }
    Ok(())
}
