//! The configuration of the suite: it owns main.cf and master.cf — reading them with
//! Postfix's rules (logical lines, last definition wins, `$name` expansion), the typed
//! parameter table that is the single source of defaults, `postconf -d` and postconf(5),
//! and the in-place editors behind `postconf -e` and `-M`. It does no logging and no
//! process work: callers decide how to report its errors, which always name the file and
//! line. Daemons load a [`Config`] once at start and copy what they need into typed structs.

pub mod config;
pub mod defaults;
pub mod edit;
pub mod error;
pub mod expand;
pub mod lines;
pub mod maincf;
pub mod man;
pub mod mastercf;
pub mod params;
pub mod value;

pub use config::{Config, DEFAULT_CONFIG_DIR, Source};
pub use error::ConfigError;
pub use maincf::MainCf;
pub use mastercf::{MasterCf, Service, ServiceType};
pub use params::{Kind, PARAMS, ParamDef};

#[cfg(test)]
mod tests {
    #[test]
    fn man_page_matches_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../man/postconf.5");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == crate::man::postconf5(),
            "man/postconf.5 is out of date: run `postconf --man > man/postconf.5`"
        );
    }

    #[test]
    fn table_has_no_duplicates_and_valid_defaults() {
        let mut names: Vec<&str> = crate::PARAMS.iter().map(|p| p.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate parameter names");
        let main = crate::MainCf::default();
        let cfg = crate::Config::from_main(std::path::Path::new("/etc/oxipost"), main, false);
        for p in crate::PARAMS {
            let e = cfg.expand(p.default);
            assert!(e.is_ok(), "default of {} does not expand: {:?}", p.name, e);
            // forward_path and default_rbl_reply refer to attributes filled in when they
            // are used ($home, $extension; $rbl_code, $rbl_domain), not to parameters.
            assert!(
                p.name == "forward_path"
                    || p.name == "default_rbl_reply"
                    || e.map(|e| e.undefined).unwrap_or_default().is_empty(),
                "default of {} refers to an unknown parameter",
                p.name
            );
        }
        assert!(cfg.validate().is_ok());
    }
}
