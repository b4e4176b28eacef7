//! The configuration in effect: parameter table defaults, main.cf, then overrides (`-o` from
//! master.cf or a command line). Daemons read it once at start and build their own typed
//! structs from it; nothing queries it by name on a hot path.

use crate::error::ConfigError;
use crate::expand::{self, Expansion};
use crate::maincf::MainCf;
use crate::params::{self, Kind, ParamDef, SERVICE_SUFFIXES};
use crate::{defaults, value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default configuration directory when neither `-c` nor `MAIL_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/oxipost";

#[derive(Debug, Clone)]
pub struct Config {
    pub config_dir: PathBuf,
    pub main: MainCf,
    /// Values set outside main.cf (`-c`, master.cf `-o`): they win over main.cf.
    overrides: Vec<(String, String)>,
    /// master.cf service names, which make `<service>_<suffix>` parameters known.
    services: Vec<String>,
    /// master.cf `-o` settings of all services: their names are defined parameters and
    /// their values may refer to user-defined ones.
    master_overrides: Vec<(String, String)>,
}

/// Where a value in effect came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    MainCf,
    Override,
}

impl Config {
    /// The configuration directory chosen by `-c`, else `MAIL_CONFIG`, else the default.
    pub fn resolve_dir(cli: Option<&Path>) -> (PathBuf, bool) {
        if let Some(d) = cli {
            return (d.to_path_buf(), true);
        }
        match std::env::var_os("MAIL_CONFIG") {
            Some(d) if !d.is_empty() => (PathBuf::from(d), true),
            _ => (PathBuf::from(DEFAULT_CONFIG_DIR), false),
        }
    }

    /// Loads `dir/main.cf` (required) and the service names of `dir/master.cf` (optional).
    /// `explicit` marks the directory as chosen by the user, which sets `config_directory`.
    pub fn load(dir: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let main = MainCf::load(&dir.join("main.cf"))?;
        let mut cfg = Config::from_main(dir, main, explicit);
        if let Ok(text) = std::fs::read_to_string(dir.join("master.cf")) {
            // Only names are needed here; master.cf errors are reported by its own loader.
            if let Ok(m) = crate::mastercf::MasterCf::parse(&dir.join("master.cf"), &text) {
                cfg.services = m.services.iter().map(|s| s.name.clone()).collect();
                cfg.master_overrides = m
                    .services
                    .iter()
                    .flat_map(|s| s.overrides.iter().cloned())
                    .collect();
            }
        }
        Ok(cfg)
    }

    pub fn from_main(dir: &Path, main: MainCf, explicit: bool) -> Config {
        let mut overrides = Vec::new();
        if explicit {
            overrides.push((
                "config_directory".to_string(),
                dir.to_string_lossy().into_owned(),
            ));
        }
        Config {
            config_dir: dir.to_path_buf(),
            main,
            overrides,
            services: Vec::new(),
            master_overrides: Vec::new(),
        }
    }

    /// Sets a value that wins over main.cf (as master.cf's `-o name=value`).
    pub fn set_override(&mut self, name: &str, value: &str) {
        self.overrides.retain(|(n, _)| n != name);
        self.overrides.push((name.to_string(), value.to_string()));
    }

    pub fn overrides(&self) -> &[(String, String)] {
        &self.overrides
    }

    pub fn set_services(&mut self, names: Vec<String>) {
        self.services = names;
    }

    /// True for parameters of the table and per-service parameters of master.cf services.
    pub fn is_known(&self, name: &str) -> bool {
        params::lookup(name).is_some() || self.service_param(name).is_some()
    }

    /// For `<service>_<suffix>` names: the default parameter it falls back to.
    fn service_param(&self, name: &str) -> Option<String> {
        for svc in &self.services {
            let Some(rest) = name
                .strip_prefix(svc.as_str())
                .and_then(|r| r.strip_prefix('_'))
            else {
                continue;
            };
            if SERVICE_SUFFIXES.contains(&rest) {
                let fallback = match rest {
                    "initial_destination_concurrency" => rest.to_string(),
                    "time_limit" => "command_time_limit".to_string(),
                    _ => format!("default_{rest}"),
                };
                return Some(fallback);
            }
        }
        None
    }

    /// The built-in default, unexpanded (computed ones from the host).
    pub fn default_raw(&self, name: &str) -> Option<String> {
        if let Some(def) = params::lookup(name) {
            if def.computed {
                return Some(self.computed_default(def));
            }
            return Some(def.default.to_string());
        }
        self.service_param(name)
            .map(|fallback| format!("${fallback}"))
    }

    fn computed_default(&self, def: &ParamDef) -> String {
        match def.name {
            "myhostname" => defaults::myhostname(),
            "mydomain" => {
                let host = self
                    .get("myhostname")
                    .unwrap_or_else(|_| defaults::myhostname());
                defaults::mydomain(&host)
            }
            "mynetworks" => {
                let style = self
                    .get("mynetworks_style")
                    .unwrap_or_else(|_| "host".into());
                defaults::mynetworks(style.trim())
            }
            "process_name" => std::env::args_os()
                .next()
                .and_then(|a| {
                    std::path::Path::new(&a)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                })
                .unwrap_or_default(),
            _ => def.default.to_string(),
        }
    }

    /// The unexpanded value in effect and where it came from; `None` when the name is
    /// neither known nor defined in main.cf.
    pub fn raw_with_source(&self, name: &str) -> Option<(String, Source)> {
        if let Some((_, v)) = self.overrides.iter().rev().find(|(n, _)| n == name) {
            return Some((v.clone(), Source::Override));
        }
        if let Some(v) = self.main.get(name) {
            return Some((v.to_string(), Source::MainCf));
        }
        self.default_raw(name).map(|v| (v, Source::Default))
    }

    pub fn raw(&self, name: &str) -> Option<String> {
        self.raw_with_source(name).map(|(v, _)| v)
    }

    /// Expands `$name` references in `text` against this configuration.
    pub fn expand(&self, text: &str) -> Result<Expansion, expand::ExpandError> {
        expand::expand(text, &|n: &str| self.raw(n))
    }

    /// The expanded value of a parameter (undefined references expand to nothing).
    pub fn get(&self, name: &str) -> Result<String, ConfigError> {
        let raw = self.raw(name).unwrap_or_default();
        self.expand(&raw)
            .map(|e| e.value)
            .map_err(|e| ConfigError::Expand {
                name: name.to_string(),
                message: e.to_string(),
            })
    }

    fn value_error(&self, name: &str, e: value::ValueError) -> ConfigError {
        let line = self
            .main
            .entries
            .iter()
            .rev()
            .find(|en| en.name == name)
            .map(|en| en.first);
        ConfigError::Value {
            path: self.main.path.clone(),
            line,
            message: e.to_string(),
        }
    }

    pub fn get_bool(&self, name: &str) -> Result<bool, ConfigError> {
        let v = self.get(name)?;
        value::parse_bool(name, &v).map_err(|e| self.value_error(name, e))
    }

    pub fn get_int(&self, name: &str) -> Result<i64, ConfigError> {
        let v = self.get(name)?;
        value::parse_int(name, &v).map_err(|e| self.value_error(name, e))
    }

    pub fn get_size(&self, name: &str) -> Result<u64, ConfigError> {
        let v = self.get(name)?;
        value::parse_size(name, &v).map_err(|e| self.value_error(name, e))
    }

    pub fn get_time(&self, name: &str) -> Result<Duration, ConfigError> {
        let unit = match params::lookup(name).map(|d| d.kind) {
            Some(Kind::Time(u)) => u,
            _ => 's',
        };
        let v = self.get(name)?;
        value::parse_time(name, &v, unit).map_err(|e| self.value_error(name, e))
    }

    pub fn get_list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        Ok(value::split_list(&self.get(name)?))
    }

    /// Checks that every main.cf value of a typed parameter parses as its type, and that
    /// every value expands. Errors name the main.cf line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for e in &self.main.entries {
            self.get(&e.name)?;
        }
        for def in params::PARAMS {
            let r = match def.kind {
                Kind::Bool => self.get_bool(def.name).map(|_| ()),
                Kind::Int => self.get_int(def.name).map(|_| ()),
                Kind::Size => self.get_size(def.name).map(|_| ()),
                Kind::Time(_) => self.get_time(def.name).map(|_| ()),
                _ => Ok(()),
            };
            // A default that references an unset parameter can be empty; only values the
            // administrator wrote are held to their type.
            if self.main.get(def.name).is_some()
                || self.overrides.iter().any(|(n, _)| n == def.name)
            {
                r?;
            }
        }
        Ok(())
    }

    /// User-defined parameters that count as used, as Postfix decides: those named by a
    /// master.cf `-o`, and those referred to (`$name`) from any main.cf value or `-o` value.
    pub fn referenced_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .master_overrides
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let texts = self
            .main
            .entries
            .iter()
            .map(|e| e.value.as_str())
            .chain(self.overrides.iter().map(|(_, v)| v.as_str()))
            .chain(self.master_overrides.iter().map(|(_, v)| v.as_str()));
        for t in texts {
            for n in crate::expand::references(t) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        let main = MainCf::parse(Path::new("main.cf"), text).expect("parses");
        Config::from_main(Path::new("/etc/oxipost"), main, false)
    }

    #[test]
    fn defaults_and_expansion() {
        let c = cfg("myhostname = mx.example.org\n");
        assert_eq!(c.get("mydomain").expect("ok"), "example.org");
        assert_eq!(c.get("myorigin").expect("ok"), "mx.example.org");
        assert_eq!(
            c.get("mydestination").expect("ok"),
            "mx.example.org, localhost.example.org, localhost"
        );
        assert_eq!(c.get_size("message_size_limit").expect("ok"), 10240000);
        assert_eq!(
            c.get_time("smtpd_timeout").expect("ok"),
            Duration::from_secs(300)
        );
        assert_eq!(
            c.get_time("maximal_queue_lifetime").expect("ok"),
            Duration::from_secs(5 * 86400)
        );
    }

    #[test]
    fn compatibility_level_changes_defaults() {
        let old = cfg("myhostname = a.b\n");
        assert_eq!(
            old.get("relay_domains").expect("ok"),
            "a.b, localhost.b, localhost"
        );
        let new = cfg("myhostname = a.b\ncompatibility_level = 3.6\n");
        assert_eq!(new.get("relay_domains").expect("ok"), "");
        assert!(new.get_bool("smtputf8_enable").expect("ok"));
    }

    #[test]
    fn typed_errors_name_the_line() {
        let c = cfg("a = 1\nmessage_size_limit = lots\n");
        let e = c.validate().expect_err("bad size");
        assert_eq!(
            e.to_string(),
            "main.cf:2: bad size value for parameter \"message_size_limit\": \"lots\""
        );
        let c = cfg("x = $y\ny = $x\n");
        assert!(c.validate().is_err());
    }

    #[test]
    fn overrides_win() {
        let mut c = cfg("smtpd_banner = one\n");
        c.set_override("smtpd_banner", "two $mail_name");
        assert_eq!(c.get("smtpd_banner").expect("ok"), "two oxipost");
    }

    #[test]
    fn service_parameters() {
        let mut c = cfg("");
        c.set_services(vec!["local".into(), "relay".into()]);
        assert!(c.is_known("local_destination_concurrency_limit"));
        assert_eq!(
            c.get("relay_destination_recipient_limit").expect("ok"),
            "50"
        );
        assert!(!c.is_known("nosuch_destination_concurrency_limit"));
    }
}
