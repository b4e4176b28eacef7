//! postmap(1) and postalias(1): build, query, dump and edit lookup tables.
//!
//! Both tools are one program over `oxipost-maps`: postmap reads `key value` sources,
//! postalias reads aliases(5) sources (`name: value, ...`, keys end at the colon, an
//! `@` → `@` entry is added as Postfix does for sendmail). Indexed tables (`hash:`,
//! `btree:`, `lmdb:`, `cdb:`) are written whole to a temporary file and renamed, so a
//! running daemon never reads a half-built map; `-i` and `-d` rewrite the index the same
//! way. The tool owns argument parsing and messages only; formats are the library's.
//!
//! Accepted for compatibility without effect: `-N`/`-n` (oxipost's index stores lengths,
//! not C strings), `-u`/`-U` (UTF-8 handling), `-o` only matters when run as root (see
//! `--help`).

use oxipost_maps::indexed::{self, Builder, Duplicates, Inserted};
use oxipost_maps::text::{SourceFormat, read_records};
use oxipost_maps::{MapConfig, MapError, Table, split_spec};
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Which tool is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Postmap,
    Postalias,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Postmap => "postmap",
            Tool::Postalias => "postalias",
        }
    }

    fn format(self) -> SourceFormat {
        match self {
            Tool::Postmap => SourceFormat::Postmap,
            Tool::Postalias => SourceFormat::Aliases,
        }
    }
}

/// The parsed command line.
#[derive(Debug, Default)]
pub struct Opts {
    pub config_dir: Option<PathBuf>,
    pub query: Option<String>,
    pub delete: Option<String>,
    pub dump: bool,
    pub incremental: bool,
    pub no_fold: bool,
    pub keep_root: bool,
    pub no_inherit_mode: bool,
    pub headers: bool,
    pub bodies: bool,
    pub dups: Option<Duplicates>,
    pub verbose: u32,
    pub maps: Vec<String>,
}

fn usage(tool: Tool) -> String {
    let t = tool.name();
    format!(
        "usage: {t} [-Nbfhimnoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file...

Build an indexed lookup table from each source file (the default), or:
  -q key     print the value of key (exit 1 when not found); with -q -, read keys from
             standard input and print key<TAB>value for each key found
  -d key     remove key from the tables (-d -: keys from standard input); exit 1 when none
  -s         print every entry (key<TAB>value{colon})
  -i         add the entries on standard input to an existing table (incremental)
  -b, -h     with -q -: standard input is a message; look up its body lines (-b) and/or
             header lines (-h, continuation lines joined)
  -c dir     read main.cf in dir (default_database_type); else $MAIL_CONFIG, /etc/oxipost
  -f         do not fold keys to lower case
  -r         on duplicate keys keep the last value;  -w  keep the first silently
             (default: keep the first and warn)
  -p         do not copy the source file's permissions to the index (use 0644)
  -o         as root, do not switch to the source file's owner while building
  -N, -n     accepted, no effect (oxipost indexes store lengths, not C strings)
  -u, -U     accepted, no effect
  -v         verbose
Types: hash, btree, lmdb, cdb (one oxipost index format: FILE.db, .lmdb, .cdb);
texthash, inline, static, regexp, pcre, cidr, unix, environ, fail, sqlite, pgsql, mysql
for queries. Without a type, default_database_type (hash) is used.",
        colon = if tool == Tool::Postalias { ":" } else { "" }
    )
}

/// Parses arguments getopt-style (clustered flags, `-qkey` or `-q key`).
pub fn parse_args(tool: Tool, args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--help" {
            return Err(String::new());
        }
        if a == "--" {
            o.maps.extend(args[i..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            o.maps.push(a.clone());
            continue;
        }
        let flags: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < flags.len() {
            let f = flags[j];
            j += 1;
            let mut optarg = || -> Result<String, String> {
                if j < flags.len() {
                    let v: String = flags[j..].iter().collect();
                    j = flags.len();
                    Ok(v)
                } else if i < args.len() {
                    i += 1;
                    Ok(args[i - 1].clone())
                } else {
                    Err(format!("option requires an argument -- '{f}'"))
                }
            };
            match f {
                'c' => o.config_dir = Some(PathBuf::from(optarg()?)),
                'q' => o.query = Some(optarg()?),
                'd' => o.delete = Some(optarg()?),
                's' => o.dump = true,
                'i' => o.incremental = true,
                'f' => o.no_fold = true,
                'o' => o.keep_root = true,
                'p' => o.no_inherit_mode = true,
                'b' => o.bodies = true,
                'h' => o.headers = true,
                'r' => o.dups = Some(Duplicates::Replace),
                'w' => o.dups = Some(Duplicates::Ignore),
                'v' => o.verbose += 1,
                'N' | 'n' | 'u' | 'U' | 'm' => {}
                _ => return Err(format!("invalid option -- '{f}'")),
            }
        }
    }
    let modes = [o.query.is_some(), o.delete.is_some(), o.dump]
        .iter()
        .filter(|m| **m)
        .count();
    if modes > 1 {
        return Err("specify only one of -s -q or -d".into());
    }
    if (o.headers || o.bodies) && o.query.as_deref() != Some("-") {
        return Err("option -b and -h require -q -".into());
    }
    if o.maps.is_empty() {
        return Err(usage(tool));
    }
    let _ = tool;
    Ok(o)
}

struct Ctx {
    tool: Tool,
    opts: Opts,
    cfg: MapConfig,
    default_type: String,
}

impl Ctx {
    fn warn(&self, msg: &str) {
        eprintln!("{}: warning: {msg}", self.tool.name());
    }

    fn fatal(&self, msg: &str) -> ExitCode {
        eprintln!("{}: fatal: {msg}", self.tool.name());
        ExitCode::from(1)
    }

    /// `type:name`, with the default type for a bare name.
    fn spec(&self, operand: &str) -> String {
        match split_spec(operand) {
            Ok(_) => operand.to_string(),
            Err(_) => format!("{}:{operand}", self.default_type),
        }
    }

    fn open(&self, operand: &str) -> Result<Table, MapError> {
        let t = Table::open(&self.spec(operand), &self.cfg)?;
        for w in t.warnings() {
            self.warn(&w);
        }
        Ok(t)
    }

    fn fold(&self, key: String) -> String {
        if self.cfg.fold_case {
            key.to_ascii_lowercase()
        } else {
            key
        }
    }
}

/// The entry point of both binaries.
pub fn main_with(tool: Tool) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(tool, &args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{}", usage(tool));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}: fatal: {e}", tool.name());
            return ExitCode::from(1);
        }
    };
    let (dir, explicit) = oxipost_config::Config::resolve_dir(opts.config_dir.as_deref());
    let config = match oxipost_config::Config::load(&dir, explicit) {
        Ok(c) => c,
        Err(e) => {
            if explicit {
                eprintln!("{}: warning: {e}", tool.name());
            }
            oxipost_config::Config::from_main(&dir, Default::default(), explicit)
        }
    };
    let default_type = config
        .get("default_database_type")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "hash".to_string());
    let cfg = MapConfig {
        fold_case: !opts.no_fold,
        ..MapConfig::default()
    };
    let ctx = Ctx {
        tool,
        opts,
        cfg,
        default_type,
    };
    if let Some(q) = ctx.opts.query.clone() {
        return query(&ctx, &q);
    }
    if let Some(d) = ctx.opts.delete.clone() {
        return delete(&ctx, &d);
    }
    if ctx.opts.dump {
        return dump(&ctx);
    }
    build_all(&ctx)
}

fn query(ctx: &Ctx, key: &str) -> ExitCode {
    let mut tables = Vec::new();
    for m in &ctx.opts.maps {
        match ctx.open(m) {
            Ok(t) => tables.push(t),
            Err(e) => return ctx.fatal(&e.to_string()),
        }
    }
    let find = |k: &str| -> Result<Option<String>, MapError> {
        for t in &tables {
            if let Some(v) = t.lookup(k)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut found = false;
    if key != "-" {
        return match find(key) {
            Ok(Some(v)) => {
                let _ = writeln!(out, "{v}");
                ExitCode::SUCCESS
            }
            Ok(None) => ExitCode::from(1),
            Err(e) => {
                let _ = out.flush();
                ctx.fatal(&e.to_string())
            }
        };
    }
    let stdin = io::stdin();
    let input = BufReader::with_capacity(1 << 16, stdin.lock());
    let keys: Box<dyn Iterator<Item = io::Result<String>>> = if ctx.opts.headers || ctx.opts.bodies
    {
        Box::new(message_lines(input, ctx.opts.headers, ctx.opts.bodies).into_iter())
    } else {
        Box::new(input.split(b'\n').map(|l| {
            l.map(|mut l| {
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                String::from_utf8_lossy(&l).into_owned()
            })
        }))
    };
    for k in keys {
        let k = match k {
            Ok(k) => k,
            Err(e) => return ctx.fatal(&format!("read standard input: {e}")),
        };
        if !(ctx.opts.headers || ctx.opts.bodies) && k.trim().is_empty() {
            continue;
        }
        match find(&k) {
            Ok(Some(v)) => {
                found = true;
                let colon = if ctx.tool == Tool::Postalias { ":" } else { "" };
                if writeln!(out, "{k}{colon}\t{v}").is_err() {
                    return ExitCode::from(1);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = out.flush();
                return ctx.fatal(&e.to_string());
            }
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Splits a message into logical header lines (continuations joined with their newline)
/// and body lines, as postmap -h / -b look them up.
fn message_lines<R: BufRead>(input: R, headers: bool, bodies: bool) -> Vec<io::Result<String>> {
    let mut out = Vec::new();
    let mut in_headers = true;
    let mut cur: Option<String> = None;
    for line in input.split(b'\n') {
        let mut line = match line {
            Ok(l) => l,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        };
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if in_headers {
            if line.starts_with([' ', '\t'])
                && let Some(c) = cur.as_mut()
            {
                c.push('\n');
                c.push_str(&line);
                continue;
            }
            if let Some(c) = cur.take()
                && headers
            {
                out.push(Ok(c));
            }
            if line.is_empty() {
                in_headers = false;
                continue;
            }
            cur = Some(line);
        } else if bodies {
            out.push(Ok(line));
        }
    }
    if let Some(c) = cur.take()
        && headers
    {
        out.push(Ok(c));
    }
    out
}

fn dump(ctx: &Ctx) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let colon = if ctx.tool == Tool::Postalias { ":" } else { "" };
    for m in &ctx.opts.maps {
        let entries = ctx.open(m).and_then(|t| {
            t.dump()
                .map_err(|e| MapError::new(e.kind, format!("table {}: {}", t.spec(), e)))
        });
        match entries {
            Ok(es) => {
                for (k, v) in es {
                    let _ = writeln!(out, "{k}{colon}\t{v}");
                }
            }
            Err(e) => {
                let _ = out.flush();
                return ctx.fatal(&e.to_string());
            }
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

/// The index file and source name of an operand; Err for non-indexed types.
fn indexed_target(ctx: &Ctx, operand: &str) -> Result<(PathBuf, String), String> {
    let spec = ctx.spec(operand);
    let (kind, name) = split_spec(&spec).map_err(|e| e.to_string())?;
    match kind {
        "hash" | "btree" | "lmdb" | "cdb" => {
            Ok((indexed::index_path(kind, name), name.to_string()))
        }
        k if oxipost_maps::MAP_TYPES.contains(&k) => {
            Err(format!("{kind}:{name} map requires O_RDONLY access mode"))
        }
        _ => Err(format!("unsupported dictionary type: {kind}")),
    }
}

fn dups(ctx: &Ctx) -> Duplicates {
    ctx.opts.dups.unwrap_or(Duplicates::Warn)
}

/// As root, switches to the owner of `path` unless -o (Postfix's postmap does this so a
/// user's table cannot be used to write where only root may).
fn drop_to_owner(ctx: &Ctx, path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if ctx.opts.keep_root || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    if m.uid() == 0 {
        return Ok(());
    }
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(m.gid())).map_err(|e| format!("setgid: {e}"))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(m.uid())).map_err(|e| format!("setuid: {e}"))?;
    Ok(())
}

fn build_all(ctx: &Ctx) -> ExitCode {
    for m in &ctx.opts.maps {
        let (index, source) = match indexed_target(ctx, m) {
            Ok(x) => x,
            Err(e) => return ctx.fatal(&e),
        };
        if let Err(e) = build_one(ctx, &index, &source) {
            return ctx.fatal(&e);
        }
    }
    ExitCode::SUCCESS
}

fn build_one(ctx: &Ctx, index: &Path, source: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let folded = ctx.cfg.fold_case;
    let (mut builder, reader, src_meta): (Builder, Box<dyn BufRead>, Option<std::fs::Metadata>) =
        if ctx.opts.incremental {
            let b = Builder::from_file(index, dups(ctx), folded)
                .map_err(|e| format!("open database {}: {e}", index.display()))?;
            (b, Box::new(BufReader::new(io::stdin())), None)
        } else {
            let f = std::fs::File::open(source).map_err(|e| format!("open {source}: {e}"))?;
            let meta = f.metadata().ok();
            drop_to_owner(ctx, Path::new(source))?;
            (
                Builder::new(dups(ctx), folded),
                Box::new(BufReader::with_capacity(1 << 20, f)),
                meta,
            )
        };
    let src_name = if ctx.opts.incremental {
        "-".to_string()
    } else {
        source.to_string()
    };
    let progress =
        io::stderr().is_terminal() && src_meta.as_ref().is_some_and(|m| m.len() > 8 << 20);
    let mut count = 0usize;
    let mut dup_warnings = Vec::new();
    let index_name = index.display().to_string();
    let warn_dups = dups(ctx) == Duplicates::Warn;
    read_records(
        reader,
        ctx.tool.format(),
        |line, w| ctx.warn(&format!("{src_name}, line {line}: {w}")),
        |r| {
            let key = ctx.fold(r.key);
            if builder.insert(&key, &r.value) == Inserted::KeptFirst && warn_dups {
                dup_warnings.push(format!("{index_name}: duplicate entry: \"{key}\""));
                if dup_warnings.len() < 1000 {
                    ctx.warn(&format!("{index_name}: duplicate entry: \"{key}\""));
                }
            }
            count += 1;
            if progress && count.is_multiple_of(100_000) {
                eprint!("\r{}: {count} entries", ctx.tool.name());
            }
        },
    )
    .map_err(|e| format!("read {src_name}: {e}"))?;
    if progress {
        eprintln!(
            "\r{}: {count} entries, writing {index_name}",
            ctx.tool.name()
        );
    }
    if ctx.tool == Tool::Postalias {
        builder.insert("@", "@");
    }
    let mode = if ctx.opts.incremental {
        std::fs::metadata(index).ok().map(|m| m.mode() & 0o7777)
    } else if ctx.opts.no_inherit_mode {
        Some(0o644)
    } else {
        src_meta.as_ref().map(|m| m.mode() & 0o7777)
    };
    builder
        .write(index, mode)
        .map_err(|e| format!("write {index_name}: {e}"))?;
    if ctx.opts.verbose > 0 {
        ctx.warn(&format!("{index_name}: {} entries", builder.len()));
    }
    Ok(())
}

fn delete(ctx: &Ctx, key: &str) -> ExitCode {
    let keys: Vec<String> = if key == "-" {
        io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        vec![key.to_string()]
    };
    let mut found = false;
    for m in &ctx.opts.maps {
        let (index, _) = match indexed_target(ctx, m) {
            Ok(x) => x,
            Err(e) => return ctx.fatal(&e),
        };
        let mut b = match Builder::from_file(&index, dups(ctx), ctx.cfg.fold_case) {
            Ok(b) => b,
            Err(e) => return ctx.fatal(&format!("open database {}: {e}", index.display())),
        };
        let mut changed = false;
        for k in &keys {
            if b.remove(&ctx.fold(k.clone())) {
                changed = true;
            }
        }
        if changed {
            found = true;
            use std::os::unix::fs::MetadataExt;
            let mode = std::fs::metadata(&index).ok().map(|m| m.mode() & 0o7777);
            if let Err(e) = b.write(&index, mode) {
                return ctx.fatal(&format!("write {}: {e}", index.display()));
            }
        }
    }
    if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn getopt_style() {
        let o = parse_args(Tool::Postmap, &args("-fq Key hash:x")).expect("parse");
        assert!(o.no_fold);
        assert_eq!(o.query.as_deref(), Some("Key"));
        assert_eq!(o.maps, vec!["hash:x"]);
        let o = parse_args(Tool::Postmap, &args("-c /etc/x -qfoo -N a b")).expect("parse");
        assert_eq!(o.query.as_deref(), Some("foo"));
        assert_eq!(o.maps.len(), 2);
        assert!(parse_args(Tool::Postmap, &args("-s -q k x")).is_err());
        assert!(parse_args(Tool::Postmap, &args("-Z x")).is_err());
        assert!(parse_args(Tool::Postmap, &args("-q")).is_err());
        assert!(parse_args(Tool::Postmap, &args("-h -q k x")).is_err());
    }

    #[test]
    fn message_splitting() {
        let m = "Subject: hi\nX-M: a\n\tb\n\nbody 1\nbody 2\n";
        let h: Vec<String> = message_lines(m.as_bytes(), true, false)
            .into_iter()
            .map_while(Result::ok)
            .collect();
        assert_eq!(h, vec!["Subject: hi", "X-M: a\n\tb"]);
        let b: Vec<String> = message_lines(m.as_bytes(), false, true)
            .into_iter()
            .map_while(Result::ok)
            .collect();
        assert_eq!(b, vec!["body 1", "body 2"]);
    }
}
