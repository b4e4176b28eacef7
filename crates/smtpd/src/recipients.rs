//! Recipient validity for virtual and relay domains at RCPT time, as Postfix's
//! `smtpd_check_rcpt_maps()` (the part of `reject_unlisted_recipient` that is not about
//! local users), for the restriction engine to call.
//!
//! The domain's class comes from [`oxipost_cleanup::AddressClasses`] (the same that cleanup
//! and qmgr use). A recipient that `recipient_canonical_maps`, `canonical_maps` or
//! `virtual_alias_maps` knows is valid in every class. Otherwise:
//!
//! - virtual alias domain: `550 5.1.1 <addr>: Recipient address rejected: User unknown in
//!   virtual alias table` (`unknown_virtual_alias_reject_code`);
//! - virtual mailbox domain, when `virtual_mailbox_maps` is set and does not list it:
//!   `... User unknown in virtual mailbox table` (`unknown_virtual_mailbox_reject_code`);
//! - relay domain, when `relay_recipient_maps` is set and does not list it:
//!   `... User unknown in relay recipient table` (`unknown_relay_recipient_reject_code`).
//!
//! A known recipient in one of these classes is an authorized destination (what
//! `reject_unauth_destination` permits). Local and other domains are left to the local
//! recipient and relay rules ([`RcptStatus::Other`]). A table that cannot answer gives
//! `451 4.3.0 <addr>: Temporary lookup failure`, never an accept.

use std::sync::Arc;

use oxipost_cleanup::{AddressClass, CleanupSettings};
use oxipost_config::Config;
use oxipost_maps::{AddrQuery, MapConfig, MapError, Maps};

/// The answer for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptStatus {
    /// A local or foreign domain: the local recipient and relay rules decide.
    Other(AddressClass),
    /// A valid recipient of a virtual alias, virtual mailbox or relay domain.
    Accept(AddressClass),
    /// Unknown: reply `code enhanced text`.
    Reject {
        code: u16,
        enhanced: &'static str,
        text: String,
    },
    /// A table could not answer: `451 4.3.0 text`.
    Defer { text: String },
}

/// The tables and reply codes of the check, built once at start.
#[derive(Debug)]
pub struct Recipients {
    cleanup: Arc<CleanupSettings>,
    virtual_mailbox_maps: Maps,
    relay_recipient_maps: Maps,
    delimiter: String,
    alias_code: u16,
    mailbox_code: u16,
    relay_code: u16,
}

fn err(name: &str, e: impl std::fmt::Display) -> String {
    format!("parameter {name}: {e}")
}

fn reject_code(cfg: &Config, name: &str) -> Result<u16, String> {
    let v = cfg.get_int(name).map_err(|e| err(name, e))?;
    Ok(u16::try_from(v)
        .ok()
        .filter(|c| (400..600).contains(c))
        .unwrap_or(550))
}

impl Recipients {
    /// Opens `virtual_mailbox_maps` and `relay_recipient_maps`; classes and alias tables
    /// are cleanup's.
    pub fn from_config(cfg: &Config, cleanup: Arc<CleanupSettings>) -> Result<Recipients, String> {
        let mc = MapConfig::default();
        let maps = |n: &str| -> Result<Maps, String> {
            let v = cfg.get(n).map_err(|e| err(n, e))?;
            Maps::open(&v, &mc).map_err(|e| err(n, e.message))
        };
        Ok(Recipients {
            cleanup,
            virtual_mailbox_maps: maps("virtual_mailbox_maps")?,
            relay_recipient_maps: maps("relay_recipient_maps")?,
            delimiter: cfg
                .get("recipient_delimiter")
                .map_err(|e| err("recipient_delimiter", e))?
                .trim()
                .to_string(),
            alias_code: reject_code(cfg, "unknown_virtual_alias_reject_code")?,
            mailbox_code: reject_code(cfg, "unknown_virtual_mailbox_reject_code")?,
            relay_code: reject_code(cfg, "unknown_relay_recipient_reject_code")?,
        })
    }

    /// Table warnings, for the log at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.virtual_mailbox_maps.warnings();
        w.extend(self.relay_recipient_maps.warnings());
        w
    }

    fn found(&self, maps: &Maps, address: &str) -> Result<bool, MapError> {
        if maps.is_empty() {
            return Ok(false);
        }
        let classes = &self.cleanup.classes;
        let is_local = |d: &str| classes.local.matches(d).unwrap_or(false);
        let q = AddrQuery {
            delimiter: &self.delimiter,
            is_local: Some(&is_local),
            at_domain: true,
        };
        Ok(maps.lookup_addr(address, &q)?.is_some())
    }

    /// Checks `address` (`local@domain`, as received).
    pub fn check(&self, address: &str) -> RcptStatus {
        match self.check_inner(address) {
            Ok(s) => s,
            Err(e) => {
                oxipost_log::warning!("recipient {address}: {}", e.message);
                RcptStatus::Defer {
                    text: format!("<{address}>: Temporary lookup failure"),
                }
            }
        }
    }

    fn check_inner(&self, address: &str) -> Result<RcptStatus, MapError> {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        let class = self.cleanup.classes.classify(domain)?;
        if matches!(class, AddressClass::Local | AddressClass::Default) {
            return Ok(RcptStatus::Other(class));
        }
        let r = &self.cleanup.rewriter;
        for maps in [
            &r.recipient_canonical.maps,
            &r.canonical.maps,
            &r.virtual_alias,
        ] {
            if self.found(maps, address)? {
                return Ok(RcptStatus::Accept(class));
            }
        }
        let unknown = |code: u16, table: &str| RcptStatus::Reject {
            code,
            enhanced: "5.1.1",
            text: format!("<{address}>: Recipient address rejected: User unknown in {table}"),
        };
        Ok(match class {
            AddressClass::VirtualAlias => unknown(self.alias_code, "virtual alias table"),
            AddressClass::VirtualMailbox
                if !self.virtual_mailbox_maps.is_empty()
                    && !self.found(&self.virtual_mailbox_maps, address)? =>
            {
                unknown(self.mailbox_code, "virtual mailbox table")
            }
            AddressClass::Relay
                if !self.relay_recipient_maps.is_empty()
                    && !self.found(&self.relay_recipient_maps, address)? =>
            {
                unknown(self.relay_code, "relay recipient table")
            }
            _ => RcptStatus::Accept(class),
        })
    }
}
