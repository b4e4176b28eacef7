//! The typed cleanup configuration every entry point builds once at start
//! ([`CleanupSettings::from_config`]) and shares between messages: address classes,
//! rewriting tables and content checks, with their tables open. Nothing is looked up by
//! parameter name per message.

use oxipost_config::Config;
use oxipost_maps::{MapConfig, Maps};

use crate::checks::Checks;
use crate::domains::{AddressClasses, normalize_domain};
use crate::rewrite::{Canonical, Classes, Rewriter};

/// Everything cleanup needs from main.cf.
#[derive(Debug, Default)]
pub struct CleanupSettings {
    /// Which domains are local, virtual alias, virtual mailbox, relay.
    pub classes: AddressClasses,
    /// Canonical mapping, masquerading, virtual aliases.
    pub rewriter: Rewriter,
    pub header_checks: Checks,
    pub body_checks: Checks,
    /// `mime_header_checks` (Content-* headers, every header of a MIME part) and
    /// `nested_header_checks` (other headers of attached messages); both default to
    /// `$header_checks`. See [`crate::header`].
    pub mime_header_checks: Checks,
    pub nested_header_checks: Checks,
    /// `disable_mime_input_processing`: no MIME parsing, all after the header is body.
    pub disable_mime: bool,
    /// `body_checks_size_limit`: body bytes inspected.
    pub body_checks_size_limit: u64,
    /// `receive_override_options` has `no_address_mappings`.
    pub no_address_mappings: bool,
    /// `receive_override_options` has `no_header_body_checks`.
    pub no_header_body_checks: bool,
    /// `receive_override_options` has `no_unknown_recipient_checks` (smtpd does not
    /// reject unlisted recipients: the mail comes back from a content filter).
    pub no_unknown_recipient_checks: bool,
    /// `receive_override_options` has `no_milters`.
    pub no_milters: bool,
    /// `content_filter` (`transport:nexthop`, empty: none): recorded in every queue file
    /// as the `filter` attribute, which qmgr honours for all recipients.
    pub content_filter: String,
}

fn err(name: &str, e: impl std::fmt::Display) -> String {
    format!("parameter {name}: {e}")
}

impl CleanupSettings {
    /// Reads the parameters and opens the tables; an error names the parameter.
    pub fn from_config(cfg: &Config) -> Result<CleanupSettings, String> {
        let mc = MapConfig::default();
        let get = |n: &str| cfg.get(n).map_err(|e| err(n, e));
        let maps = |n: &str| -> Result<Maps, String> {
            Maps::open(&get(n)?, &mc).map_err(|e| err(n, &e.message))
        };
        let list = |n: &str| cfg.get_list(n).map_err(|e| err(n, e));
        let classes_of = |n: &str| Classes::parse(&list(n)?).map_err(|e| err(n, e));
        let int = |n: &str| -> Result<usize, String> {
            let v = cfg.get_int(n).map_err(|e| err(n, e))?;
            Ok(usize::try_from(v.max(0)).unwrap_or(usize::MAX))
        };
        let propagate: Vec<String> = list("propagate_unmatched_extensions")?
            .into_iter()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let overrides: Vec<String> = list("receive_override_options")?
            .into_iter()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let rewriter = Rewriter {
            delimiter: get("recipient_delimiter")?.trim().to_string(),
            myorigin: normalize_domain(&get("myorigin")?),
            sender_canonical: Canonical {
                maps: maps("sender_canonical_maps")?,
                classes: classes_of("sender_canonical_classes")?,
            },
            recipient_canonical: Canonical {
                maps: maps("recipient_canonical_maps")?,
                classes: classes_of("recipient_canonical_classes")?,
            },
            canonical: Canonical {
                maps: maps("canonical_maps")?,
                classes: classes_of("canonical_classes")?,
            },
            masquerade_domains: list("masquerade_domains")?
                .into_iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            masquerade_exceptions: list("masquerade_exceptions")?
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            masquerade_classes: classes_of("masquerade_classes")?,
            virtual_alias: maps("virtual_alias_maps")?,
            recursion_limit: int("virtual_alias_recursion_limit")?,
            expansion_limit: int("virtual_alias_expansion_limit")?,
            propagate_canonical: propagate.iter().any(|w| w == "canonical"),
            propagate_virtual: propagate.iter().any(|w| w == "virtual"),
        };
        Ok(CleanupSettings {
            classes: AddressClasses::from_config(cfg)?,
            rewriter,
            header_checks: Checks {
                maps: maps("header_checks")?,
            },
            body_checks: Checks {
                maps: maps("body_checks")?,
            },
            mime_header_checks: Checks {
                maps: maps("mime_header_checks")?,
            },
            nested_header_checks: Checks {
                maps: maps("nested_header_checks")?,
            },
            disable_mime: cfg
                .get_bool("disable_mime_input_processing")
                .map_err(|e| err("disable_mime_input_processing", e))?,
            body_checks_size_limit: cfg
                .get_size("body_checks_size_limit")
                .map_err(|e| err("body_checks_size_limit", e))?,
            no_address_mappings: overrides.iter().any(|w| w == "no_address_mappings"),
            no_header_body_checks: overrides.iter().any(|w| w == "no_header_body_checks"),
            no_unknown_recipient_checks: overrides
                .iter()
                .any(|w| w == "no_unknown_recipient_checks"),
            no_milters: overrides.iter().any(|w| w == "no_milters"),
            content_filter: get("content_filter")?.trim().to_string(),
        })
    }

    /// Warnings about skipped table lines, for the entry point to log once at start.
    pub fn warnings(&self) -> Vec<String> {
        let r = &self.rewriter;
        [
            &r.sender_canonical.maps,
            &r.recipient_canonical.maps,
            &r.canonical.maps,
            &r.virtual_alias,
            &self.header_checks.maps,
            &self.body_checks.maps,
            &self.mime_header_checks.maps,
            &self.nested_header_checks.maps,
        ]
        .iter()
        .flat_map(|m| m.warnings())
        .collect()
    }

    /// Whether header addresses may change (some table or masquerading applies to a
    /// header class).
    pub fn rewrites_headers(&self) -> bool {
        if self.no_address_mappings {
            return false;
        }
        let r = &self.rewriter;
        let hdr = |c: &Classes| c.header_sender || c.header_recipient;
        (!r.sender_canonical.maps.is_empty() && hdr(&r.sender_canonical.classes))
            || (!r.recipient_canonical.maps.is_empty() && hdr(&r.recipient_canonical.classes))
            || (!r.canonical.maps.is_empty() && hdr(&r.canonical.classes))
            || (!r.masquerade_domains.is_empty() && hdr(&r.masquerade_classes))
    }

    /// The envelope sender as it is to be queued.
    pub fn rewrite_sender(&self, sender: &str) -> Result<String, crate::RewriteError> {
        if self.no_address_mappings {
            return Ok(sender.to_string());
        }
        self.rewriter.sender(&self.classes, sender)
    }

    /// The envelope recipients one RCPT becomes (canonical mapping, masquerading, virtual
    /// alias expansion).
    pub fn rewrite_recipient(&self, rcpt: &str) -> Result<Vec<String>, crate::RewriteError> {
        if self.no_address_mappings {
            return Ok(vec![rcpt.to_string()]);
        }
        self.rewriter.recipient(&self.classes, rcpt)
    }
}
