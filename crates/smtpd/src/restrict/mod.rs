//! The SMTP restriction language (Postfix's `smtpd_check.c`): `smtpd_client_restrictions`,
//! `smtpd_helo_restrictions`, `smtpd_sender_restrictions`, `smtpd_relay_restrictions`,
//! `smtpd_recipient_restrictions`, `smtpd_data_restrictions`,
//! `smtpd_end_of_data_restrictions` and `smtpd_restriction_classes`.
//!
//! # Evaluation model (as Postfix)
//!
//! A list is evaluated left to right; the first restriction that answers `OK` (permit) or
//! `REJECT` ends the list, `DUNNO` goes on. An `OK` ends only its own list: at RCPT the
//! relay list and the recipient list are evaluated in turn, and with
//! `smtpd_delay_reject = yes` (the default) the client, HELO and sender lists are
//! evaluated again at every RCPT, each on its own (an `OK` in the client list does not
//! skip the sender list). `warn_if_reject` turns the next restriction's rejection into a
//! `reject_warning` log line; `defer_if_permit` and `defer_if_reject` remember a deferral
//! that replaces a later permit or rejection; a temporary DNS failure in a
//! `reject_unknown_*` check is a `defer_if_permit` (`unknown_*_tempfail_action`).
//!
//! Reply codes and texts are Postfix's, for example
//! `554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied` or
//! `554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using rbl.test`.
//! An access table that cannot answer gives Postfix's
//! `451 4.3.5 <x>: ... rejected: Server configuration error`; a recipient table
//! (`reject_unlisted_recipient`) or `mynetworks` table that cannot answer gives
//! `451 4.3.0 <x>: Temporary lookup failure`; an unknown restriction name gives
//! `451 4.3.5 Server configuration error`. Nothing is ever accepted because a table or a
//! DNS server failed.
//!
//! # Structure
//!
//! [`Restrictions`] is built once at start from main.cf (lists pre-parsed, every table
//! opened, `type:name` failures kept as tables that always fail). [`Context`] is a snapshot
//! of the session (client, HELO, sender, recipient, SASL, TLS) taken by the caller;
//! evaluation ([`check`]) is a plain function of both, so it can run on the event-loop
//! thread when the lists need no network ([`Restrictions::needs_io`]) or on a helper
//! thread ([`jobs`]) when they do (DNS lists, `reject_unknown_*`, `check_policy_service`).
//! Side effects for the message (HOLD, DISCARD, FILTER, REDIRECT, PREPEND) are collected
//! in [`Actions`], which the session writes into the queue file.
//!
//! Architecture Invariant: evaluation never touches the socket or the queue; it logs its
//! `reject:`/`reject_warning:`/`hold:`... lines itself, in Postfix's words.

pub mod access;
pub mod dns;
pub mod jobs;
pub mod nets;
pub mod policy_service;
pub mod server;
pub mod verify;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use oxipost_config::Config;
use oxipost_maps::{AddrQuery, MapConfig, Maps};

use crate::log::clean;
use nets::{DomainList, NetList};

/// Reply classes and names of the protocol stages, as Postfix words them.
pub const CLIENT: &str = "Client host";
pub const REV_CLIENT: &str = "Unverified Client host";
pub const HELO: &str = "Helo command";
pub const SENDER: &str = "Sender address";
pub const RECIPIENT: &str = "Recipient address";
pub const DATA: &str = "Data command";
pub const EOD: &str = "End-of-data";
pub const SASL_USER: &str = "SASL login name";

/// The default `smtpd_policy_service_default_action` and the reply to an unknown name.
const SERVER_ERROR: &str = "Server configuration error";

/// A reply that refuses a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub dsn: String,
    pub text: String,
}

impl Reply {
    fn new(code: u16, dsn: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            dsn: dsn.to_string(),
            text: text.into(),
        }
    }
}

/// How sure a reverse/forward DNS result is (Postfix's `SMTPD_PEER_CODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerStatus {
    /// Name found (and, for the client name, confirmed by a forward lookup).
    Ok,
    /// DNS failed temporarily.
    Temp,
    /// No name (or the forward lookup does not lead back to the address).
    #[default]
    Perm,
}

/// The protocol stage being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Vrfy,
    Data,
    Eod,
}

impl Stage {
    /// Postfix's `state->where`, as logged (`reject: RCPT from ...`).
    pub fn name(self, extended: bool) -> &'static str {
        match self {
            Stage::Connect => "CONNECT",
            Stage::Helo if extended => "EHLO",
            Stage::Helo => "HELO",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Vrfy => "VRFY",
            Stage::Data => "DATA",
            Stage::Eod => "END-OF-MESSAGE",
        }
    }
}

/// What a check needs to know about the session; owned so that it can go to a thread.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub stage: Option<Stage>,
    pub extended: bool,
    pub ip: Option<IpAddr>,
    /// The client address as logged.
    pub addr: String,
    pub port: u16,
    /// Verified client name or `unknown`.
    pub name: String,
    pub name_status: PeerStatus,
    /// The PTR name, unverified, or `unknown`.
    pub reverse_name: String,
    pub reverse_status: PeerStatus,
    pub helo: Option<String>,
    /// `None` before MAIL; `Some("")` for the null sender.
    pub sender: Option<String>,
    pub recipient: Option<String>,
    /// Recipients accepted so far in this transaction.
    pub rcpt_count: usize,
    pub protocol: String,
    pub queue_id: Option<String>,
    pub sasl_method: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_sender: Option<String>,
    /// TLS protocol and cipher, when encrypted.
    pub tls: Option<(String, String, u32)>,
    /// The client pipelined where PIPELINING does not allow it.
    pub ill_pipelining: bool,
    pub smtputf8: bool,
    /// The message size (declared SIZE, or the content size at end of data).
    pub size: u64,
    /// A per-transaction id for policy servers (`instance=`).
    pub instance: String,
}

impl Context {
    /// `name[addr]`.
    pub fn namaddr(&self) -> String {
        format!("{}[{}]", self.name, self.addr)
    }
}

/// Side effects of access-table actions for the message, kept across the transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    /// `HOLD [text]`: the message goes to the hold queue.
    pub hold: Option<String>,
    /// `DISCARD [text]`: the message is accepted and thrown away.
    pub discard: Option<String>,
    /// `FILTER transport:destination`.
    pub filter: Option<String>,
    /// `REDIRECT user@domain`: every recipient is replaced.
    pub redirect: Option<String>,
    /// `PREPEND header: text`, in order.
    pub prepend: Vec<String>,
}

/// Whether an evaluation permitted, rejected, or had no opinion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Dunno,
    Ok,
    Reject,
}

/// The error classes of `smtpd_check_reject`: only policy and protocol rejections can be
/// turned into warnings by `warn_if_reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrClass {
    Policy,
    Protocol,
    Software,
    Data,
    Bounce,
}

/// A policy service endpoint (`check_policy_service`).
#[derive(Debug, Clone)]
pub struct PolicyEndpoint {
    /// `unix:/path` (relative to the queue directory) or `inet:host:port`.
    pub endpoint: String,
    pub timeout: std::time::Duration,
    pub default_action: String,
    pub context: String,
}

/// A table opened at start, or why it could not be.
#[derive(Debug, Clone)]
pub enum TableRef {
    Open(Arc<Maps>),
    Broken(String),
}

impl TableRef {
    fn open(spec: &str) -> TableRef {
        match Maps::open(spec, &MapConfig::default()) {
            Ok(m) => {
                for w in m.warnings() {
                    oxipost_log::warning!("{w}");
                }
                TableRef::Open(Arc::new(m))
            }
            Err(e) => {
                oxipost_log::warning!("{spec} is unavailable: {e}");
                TableRef::Broken(e.to_string())
            }
        }
    }
}

/// Where a recipient (or sender) address belongs (trivial-rewrite's address classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    Local,
    VirtualAlias,
    VirtualMailbox,
    Relay,
    Default,
}

/// An address after Postfix's rewriting for resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `local@domain`, local part unquoted, domain without trailing dots.
    pub address: String,
    pub local: String,
    pub domain: String,
    pub class: AddrClass,
    /// Routing operators (`@ % !`) are left in the local part: never trusted for relay.
    pub routed: bool,
}

/// Codes and switches, with Postfix's defaults.
#[derive(Debug, Clone, Default)]
pub struct Codes {
    pub reject: u16,
    pub defer: u16,
    pub access_reject: u16,
    pub access_defer: u16,
    pub unknown_client: u16,
    pub invalid_hostname: u16,
    pub non_fqdn: u16,
    pub unknown_hostname: u16,
    pub unknown_address: u16,
    pub relay: u16,
    pub rbl: u16,
    pub plaintext: u16,
    pub multi_rcpt_bounce: u16,
    pub unknown_local: u16,
    pub unknown_relay: u16,
    pub unknown_virtual_mailbox: u16,
    pub unknown_virtual_alias: u16,
}

/// Everything the restriction engine takes from main.cf, resolved once. The default is
/// empty lists (used only when smtpd fails closed on a configuration error).
#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    pub client: Vec<String>,
    pub helo: Vec<String>,
    pub sender: Vec<String>,
    pub relay: Vec<String>,
    pub recipient: Vec<String>,
    pub data: Vec<String>,
    pub eod: Vec<String>,
    pub classes: HashMap<String, Vec<String>>,
    pub tables: HashMap<String, TableRef>,
    pub policies: HashMap<String, PolicyEndpoint>,
    pub delay_reject: bool,
    pub relay_before_recipient: bool,
    pub codes: Codes,
    pub soft_bounce: bool,
    /// `unknown_helo_hostname_tempfail_action` / `unknown_address_tempfail_action` are
    /// `defer_if_permit` (else `defer`).
    pub unknown_name_defer_if_permit: bool,
    pub unknown_addr_defer_if_permit: bool,
    pub default_rbl_reply: String,
    pub rbl_reply_maps: Option<TableRef>,
    pub null_key: String,
    pub parent_style_access: bool,
    pub allow_untrusted_routing: bool,
    pub allow_percent_hack: bool,
    pub swap_bangpath: bool,
    pub reject_unlisted_sender: bool,
    pub reject_unlisted_recipient: bool,
    pub show_table_name: bool,
    pub mynetworks: NetList,
    pub mydestination: DomainList,
    pub relay_domains: DomainList,
    pub virtual_alias_domains: DomainList,
    pub virtual_mailbox_domains: DomainList,
    /// `local_recipient_maps` when set explicitly; `None`: the built-in rule of
    /// [`crate::policy`] (system users, `local_users`).
    pub local_recipient_maps: Option<TableRef>,
    /// `alias_maps`, consulted with the built-in rule (Postfix's default
    /// local_recipient_maps is `proxy:unix:passwd.byname $alias_maps`).
    pub alias_maps: Option<TableRef>,
    /// Whether `local_recipient_maps` is non-empty (empty turns the check off).
    pub check_local_recipients: bool,
    pub relay_recipient_maps: Option<TableRef>,
    pub virtual_alias_maps: Option<TableRef>,
    pub virtual_mailbox_maps: Option<TableRef>,
    pub canonical_maps: Vec<TableRef>,
    pub sender_login_maps: Option<TableRef>,
    pub sasl_enabled: bool,
    pub recipient_delimiter: String,
    pub local_users: std::collections::HashSet<String>,
    pub double_bounce_sender: String,
    pub resolver: Option<oxipost_dns::Resolver>,
    pub queue_directory: std::path::PathBuf,
    pub mail_version: String,
    pub compatibility_level: String,
    /// `myhostname`, for `permit_mx_backup`'s "is this MX host me".
    pub myhostname: String,
    /// `myorigin`: the domain of unqualified addresses (`append_at_myorigin`).
    pub myorigin: String,
    /// `inet_interfaces` and `proxy_interfaces`, for the same question.
    pub own_addresses: server::OwnAddresses,
    /// `permit_mx_backup_networks`, and whether it is set at all.
    pub mx_backup_networks: NetList,
    pub mx_backup_networks_set: bool,
    /// Address verification (`reject_unverified_*`).
    pub verify: verify::VerifySettings,
    /// Lists that name something this build does not know (logged at start).
    pub unknown_names: Vec<String>,
}

/// Restriction names that may need DNS or a policy server (the check then runs on a
/// helper thread).
const IO_NAMES: &[&str] = &[
    "reject_unknown_client_hostname",
    "reject_unknown_client",
    "reject_unknown_reverse_client_hostname",
    "reject_rbl_client",
    "reject_rbl",
    "permit_dnswl_client",
    "reject_rhsbl_client",
    "permit_rhswl_client",
    "reject_rhsbl_reverse_client",
    "reject_unknown_helo_hostname",
    "reject_unknown_hostname",
    "reject_rhsbl_helo",
    "reject_unknown_sender_domain",
    "reject_unknown_address",
    "reject_rhsbl_sender",
    "reject_unknown_recipient_domain",
    "reject_rhsbl_recipient",
    "check_policy_service",
    "permit_mx_backup",
    "reject_unverified_sender",
    "reject_unverified_recipient",
];

/// Every restriction name this engine knows (besides class names and `type:table`).
const KNOWN: &[&str] = &[
    "permit",
    "reject",
    "defer",
    "defer_if_permit",
    "defer_if_reject",
    "warn_if_reject",
    "reject_unauth_pipelining",
    "check_policy_service",
    "reject_plaintext_session",
    "reject_unknown_client_hostname",
    "reject_unknown_client",
    "reject_unknown_reverse_client_hostname",
    "permit_mynetworks",
    "check_client_access",
    "check_reverse_client_hostname_access",
    "reject_rbl_client",
    "reject_rbl",
    "permit_dnswl_client",
    "reject_rhsbl_client",
    "permit_rhswl_client",
    "reject_rhsbl_reverse_client",
    "check_sasl_access",
    "check_helo_access",
    "reject_invalid_helo_hostname",
    "reject_invalid_hostname",
    "reject_unknown_helo_hostname",
    "reject_unknown_hostname",
    "reject_non_fqdn_helo_hostname",
    "reject_non_fqdn_hostname",
    "reject_rhsbl_helo",
    "check_sender_access",
    "reject_unknown_sender_domain",
    "reject_unknown_address",
    "reject_non_fqdn_sender",
    "reject_rhsbl_sender",
    "reject_unlisted_sender",
    "reject_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch",
    "reject_known_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch",
    "check_recipient_access",
    "permit_auth_destination",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "permit_sasl_authenticated",
    "reject_unknown_recipient_domain",
    "reject_non_fqdn_recipient",
    "reject_rhsbl_recipient",
    "reject_unlisted_recipient",
    "check_recipient_maps",
    "reject_multi_recipient_bounce",
    "permit_mx_backup",
    "reject_unverified_sender",
    "reject_unverified_recipient",
];

/// Names that take one argument (a table, a DNS domain, a policy endpoint).
const WITH_ARG: &[&str] = &[
    "check_policy_service",
    "check_client_access",
    "check_reverse_client_hostname_access",
    "reject_rbl_client",
    "reject_rbl",
    "permit_dnswl_client",
    "reject_rhsbl_client",
    "permit_rhswl_client",
    "reject_rhsbl_reverse_client",
    "check_sasl_access",
    "check_helo_access",
    "reject_rhsbl_helo",
    "check_sender_access",
    "reject_rhsbl_sender",
    "check_recipient_access",
    "reject_rhsbl_recipient",
];

/// A restriction name this engine implements (the `check_*_{mx,ns,a}_access` family is
/// listed once, in [`server::SERVER_ACCESS`]).
fn is_known(name: &str) -> bool {
    KNOWN.contains(&name) || server::is_server_access(name)
}

/// A restriction that takes the next word as its argument.
fn takes_arg(name: &str) -> bool {
    WITH_ARG.contains(&name) || server::is_server_access(name)
}

/// A restriction that may need DNS or a policy server.
fn needs_io(name: &str) -> bool {
    IO_NAMES.contains(&name) || server::is_server_access(name)
}

fn err(name: &str, e: impl std::fmt::Display) -> String {
    format!("parameter {name}: {e}")
}

/// A Postfix parameter that the suite's parameter table may not list yet: its main.cf
/// value (expanded) or Postfix's default.
fn param(cfg: &Config, name: &str, default: &str) -> Result<String, String> {
    let raw = cfg.raw(name).unwrap_or_else(|| default.to_string());
    cfg.expand(&raw)
        .map(|e| e.value.trim().to_string())
        .map_err(|e| err(name, e))
}

fn param_bool(cfg: &Config, name: &str, default: &str) -> Result<bool, String> {
    let v = param(cfg, name, default)?;
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        other => Err(err(name, format!("bad boolean value {other:?}"))),
    }
}

fn param_code(cfg: &Config, name: &str, default: u16) -> Result<u16, String> {
    let v = param(cfg, name, &default.to_string())?;
    v.parse::<u16>()
        .ok()
        .filter(|c| (400..600).contains(c))
        .ok_or_else(|| err(name, format!("bad reply code {v:?}")))
}

/// Splits a restriction list on commas and white space outside braces.
pub fn split(value: &str) -> Vec<String> {
    oxipost_maps::split_list(value)
}

/// Opens a map-list parameter (`None` when empty).
fn maps_param(cfg: &Config, name: &str, default: &str) -> Result<Option<TableRef>, String> {
    let v = param(cfg, name, default)?;
    Ok((!v.trim().is_empty()).then(|| TableRef::open(&v)))
}

impl Restrictions {
    /// Reads every restriction parameter; tables are opened now (before the privilege
    /// drop, as Postfix). A configuration error is `Err` naming the parameter.
    pub fn from_config(cfg: &Config) -> Result<Restrictions, String> {
        let list = |name: &str| -> Result<Vec<String>, String> {
            Ok(split(&cfg.get(name).map_err(|e| err(name, e))?))
        };
        let compat = param(cfg, "compatibility_level", "0")?;
        let mut classes = HashMap::new();
        for name in list("smtpd_restriction_classes")? {
            let value = cfg.get(&name).map_err(|e| err(&name, e))?;
            if value.trim().is_empty() {
                return Err(format!("restriction class `{name}' needs a definition"));
            }
            classes.insert(name.to_ascii_lowercase(), split(&value));
        }
        let mut r = Restrictions {
            client: list("smtpd_client_restrictions")?,
            helo: list("smtpd_helo_restrictions")?,
            sender: list("smtpd_sender_restrictions")?,
            relay: list("smtpd_relay_restrictions")?,
            recipient: list("smtpd_recipient_restrictions")?,
            data: list("smtpd_data_restrictions")?,
            eod: list("smtpd_end_of_data_restrictions")?,
            classes,
            tables: HashMap::new(),
            policies: HashMap::new(),
            delay_reject: cfg
                .get_bool("smtpd_delay_reject")
                .map_err(|e| err("smtpd_delay_reject", e))?,
            relay_before_recipient: param_bool(
                cfg,
                "smtpd_relay_before_recipient_restrictions",
                "${{$compatibility_level} <level {3.6} ? {no} : {yes}}",
            )?,
            codes: Codes {
                reject: param_code(cfg, "reject_code", 554)?,
                defer: param_code(cfg, "defer_code", 450)?,
                access_reject: param_code(cfg, "access_map_reject_code", 554)?,
                access_defer: param_code(cfg, "access_map_defer_code", 450)?,
                unknown_client: param_code(cfg, "unknown_client_reject_code", 450)?,
                invalid_hostname: param_code(cfg, "invalid_hostname_reject_code", 501)?,
                non_fqdn: param_code(cfg, "non_fqdn_reject_code", 504)?,
                unknown_hostname: param_code(cfg, "unknown_hostname_reject_code", 450)?,
                unknown_address: param_code(cfg, "unknown_address_reject_code", 450)?,
                relay: param_code(cfg, "relay_domains_reject_code", 554)?,
                rbl: param_code(cfg, "maps_rbl_reject_code", 554)?,
                plaintext: param_code(cfg, "plaintext_reject_code", 450)?,
                multi_rcpt_bounce: param_code(cfg, "multi_recipient_bounce_reject_code", 550)?,
                unknown_local: param_code(cfg, "unknown_local_recipient_reject_code", 550)?,
                unknown_relay: param_code(cfg, "unknown_relay_recipient_reject_code", 550)?,
                unknown_virtual_mailbox: param_code(
                    cfg,
                    "unknown_virtual_mailbox_reject_code",
                    550,
                )?,
                unknown_virtual_alias: param_code(cfg, "unknown_virtual_alias_reject_code", 550)?,
            },
            soft_bounce: param_bool(cfg, "soft_bounce", "no")?,
            unknown_name_defer_if_permit: param(
                cfg,
                "unknown_helo_hostname_tempfail_action",
                "defer_if_permit",
            )?
            .eq_ignore_ascii_case("defer_if_permit"),
            unknown_addr_defer_if_permit: param(
                cfg,
                "unknown_address_tempfail_action",
                "defer_if_permit",
            )?
            .eq_ignore_ascii_case("defer_if_permit"),
            // $rbl_* are not main.cf parameters: the template is expanded per reply.
            default_rbl_reply: cfg.raw("default_rbl_reply").unwrap_or_else(|| {
                "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}".into()
            }),
            rbl_reply_maps: maps_param(cfg, "rbl_reply_maps", "")?,
            null_key: param(cfg, "smtpd_null_access_lookup_key", "<>")?,
            parent_style_access: param(
                cfg,
                "parent_domain_matches_subdomains",
                "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
            )?
            .split(|c: char| c == ',' || c.is_whitespace())
            .any(|w| w == "smtpd_access_maps"),
            allow_untrusted_routing: param_bool(cfg, "allow_untrusted_routing", "no")?,
            allow_percent_hack: param_bool(cfg, "allow_percent_hack", "yes")?,
            swap_bangpath: param_bool(cfg, "swap_bangpath", "yes")?,
            reject_unlisted_sender: param_bool(cfg, "smtpd_reject_unlisted_sender", "no")?,
            reject_unlisted_recipient: param_bool(cfg, "smtpd_reject_unlisted_recipient", "yes")?,
            show_table_name: param_bool(cfg, "show_user_unknown_table_name", "yes")?,
            mynetworks: NetList::parse(&cfg.get("mynetworks").map_err(|e| err("mynetworks", e))?)
                .map_err(|e| err("mynetworks", e))?,
            mydestination: DomainList::parse(
                &cfg.get("mydestination").map_err(|e| err("mydestination", e))?,
                false,
            ),
            relay_domains: DomainList::parse(
                &cfg.get("relay_domains").map_err(|e| err("relay_domains", e))?,
                true,
            ),
            virtual_alias_domains: DomainList::parse(
                &cfg.get("virtual_alias_domains")
                    .map_err(|e| err("virtual_alias_domains", e))?,
                false,
            ),
            virtual_mailbox_domains: DomainList::parse(
                &cfg.get("virtual_mailbox_domains")
                    .map_err(|e| err("virtual_mailbox_domains", e))?,
                false,
            ),
            local_recipient_maps: None,
            alias_maps: None,
            check_local_recipients: !cfg
                .get("local_recipient_maps")
                .map_err(|e| err("local_recipient_maps", e))?
                .trim()
                .is_empty(),
            relay_recipient_maps: maps_param(cfg, "relay_recipient_maps", "")?,
            virtual_alias_maps: maps_param(cfg, "virtual_alias_maps", "")?,
            virtual_mailbox_maps: maps_param(cfg, "virtual_mailbox_maps", "")?,
            canonical_maps: ["canonical_maps", "recipient_canonical_maps"]
                .iter()
                .filter_map(|n| maps_param(cfg, n, "").ok().flatten())
                .collect(),
            sender_login_maps: maps_param(cfg, "smtpd_sender_login_maps", "")?,
            sasl_enabled: cfg
                .get_bool("smtpd_sasl_auth_enable")
                .map_err(|e| err("smtpd_sasl_auth_enable", e))?,
            recipient_delimiter: cfg
                .get("recipient_delimiter")
                .map_err(|e| err("recipient_delimiter", e))?
                .trim()
                .to_string(),
            local_users: cfg
                .get_list("local_users")
                .map_err(|e| err("local_users", e))?
                .into_iter()
                .map(|u| {
                    let name = u.split_once(':').map_or(u.as_str(), |(n, _)| n);
                    name.to_ascii_lowercase()
                })
                .collect(),
            double_bounce_sender: param(cfg, "double_bounce_sender", "double-bounce")?,
            resolver: None,
            queue_directory: std::path::PathBuf::from(
                cfg.get("queue_directory")
                    .map_err(|e| err("queue_directory", e))?
                    .trim(),
            ),
            mail_version: param(cfg, "mail_version", "")?,
            compatibility_level: compat,
            myhostname: param(cfg, "myhostname", "localhost")?.to_ascii_lowercase(),
            myorigin: param(cfg, "myorigin", "$myhostname")?
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            own_addresses: server::OwnAddresses::parse(
                &param(cfg, "inet_interfaces", "all")?,
                &param(cfg, "proxy_interfaces", "")?,
            ),
            mx_backup_networks: NetList::parse(&param(cfg, "permit_mx_backup_networks", "")?)
                .map_err(|e| err("permit_mx_backup_networks", e))?,
            mx_backup_networks_set: !param(cfg, "permit_mx_backup_networks", "")?.is_empty(),
            verify: verify::VerifySettings::from_config(
                cfg,
                &param(cfg, "myorigin", "$myhostname")?.to_ascii_lowercase(),
            )?,
            unknown_names: Vec::new(),
        };
        // local_recipient_maps: an explicit setting is honoured table by table; the
        // default (passwd.byname and $alias_maps) is the built-in rule of crate::policy
        // (system users and local_users, which no table lists) plus alias_maps.
        if let Some((raw, source)) = cfg.raw_with_source("local_recipient_maps")
            && source != oxipost_config::Source::Default
            && !raw.trim().is_empty()
        {
            r.local_recipient_maps = maps_param(cfg, "local_recipient_maps", "")?;
        } else {
            r.alias_maps = maps_param(cfg, "alias_maps", "")?;
        }
        let dns_servers = param(cfg, "oxipost_dns_servers", "")?;
        let mut resolver = oxipost_dns::Resolver::from_param(&dns_servers)
            .map_err(|e| err("oxipost_dns_servers", e))?;
        resolver
            .set_timeout(std::time::Duration::from_secs(2))
            .set_attempts(2);
        r.resolver = Some(resolver);
        r.prepare(cfg)?;
        Ok(r)
    }

    /// Opens every table and registers every policy endpoint named in the lists.
    fn prepare(&mut self, cfg: &Config) -> Result<(), String> {
        let mut lists: Vec<Vec<String>> = vec![
            self.client.clone(),
            self.helo.clone(),
            self.sender.clone(),
            self.relay.clone(),
            self.recipient.clone(),
            self.data.clone(),
            self.eod.clone(),
        ];
        lists.extend(self.classes.values().cloned());
        let timeout = cfg
            .get_time("smtpd_policy_service_timeout")
            .unwrap_or(std::time::Duration::from_secs(100));
        let default_action = param(
            cfg,
            "smtpd_policy_service_default_action",
            "451 4.3.5 Server configuration problem",
        )?;
        let context = param(cfg, "smtpd_policy_service_policy_context", "")?;
        for l in &lists {
            let mut prev: Option<&str> = None;
            for word in l {
                let lower = word.to_ascii_lowercase();
                if prev.is_some_and(|p| p.eq_ignore_ascii_case("check_policy_service")) {
                    let ep =
                        policy_service::parse_endpoint(word, timeout, &default_action, &context)?;
                    self.policies.insert(word.clone(), ep);
                } else if word.starts_with('{') || word.contains(':') {
                    if !self.tables.contains_key(word) {
                        self.tables.insert(word.clone(), TableRef::open(word));
                    }
                } else if !is_known(&lower)
                    && !self.classes.contains_key(&lower)
                    && !prev.is_some_and(|p| takes_arg(&p.to_ascii_lowercase()))
                {
                    self.unknown_names.push(word.clone());
                }
                prev = Some(word);
            }
        }
        // Postfix refuses to start without a working relay guard.
        let required = [
            "reject_unauth_destination",
            "defer_unauth_destination",
            "reject",
            "defer",
            "defer_if_permit",
        ];
        if self.relay.is_empty() && self.recipient.is_empty() {
            // compatibility_level 0 with neither list set: Postfix's historical default
            // (before smtpd_relay_restrictions existed).
            self.recipient = vec![
                "permit_mynetworks".to_string(),
                "reject_unauth_destination".to_string(),
            ];
        }
        if !self.has_required(&self.relay, &required, 0)
            && !self.has_required(&self.recipient, &required, 0)
        {
            return Err(format!(
                "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one working instance of: {}",
                "reject_unauth_destination, defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains"
            ));
        }
        Ok(())
    }

    fn has_required(&self, list: &[String], required: &[&str], depth: usize) -> bool {
        let mut i = 0;
        while i < list.len() {
            let w = list[i].to_ascii_lowercase();
            if w == "warn_if_reject" && i + 1 < list.len() {
                i += 2;
                continue;
            }
            if w == "permit" {
                return false;
            }
            if required.contains(&w.as_str()) {
                return true;
            }
            if depth < 10
                && let Some(c) = self.classes.get(&w)
                && self.has_required(c, required, depth + 1)
            {
                return true;
            }
            i += 1;
        }
        false
    }

    /// True when checking `stage` may wait on DNS or a policy server: the caller then
    /// evaluates on a helper thread.
    pub fn needs_io(&self, stage: Stage) -> bool {
        let lists: Vec<&Vec<String>> = match stage {
            Stage::Connect => vec![&self.client],
            Stage::Helo => vec![&self.helo],
            Stage::Mail => vec![&self.sender],
            Stage::Rcpt | Stage::Vrfy => {
                let mut v = vec![&self.relay, &self.recipient];
                if self.delay_reject {
                    v.extend([&self.client, &self.helo, &self.sender]);
                }
                v
            }
            Stage::Data => vec![&self.data],
            Stage::Eod => vec![&self.eod],
        };
        lists.iter().any(|l| self.list_needs_io(l, 0))
    }

    fn list_needs_io(&self, list: &[String], depth: usize) -> bool {
        list.iter().any(|w| {
            let w = w.to_ascii_lowercase();
            needs_io(&w)
                || (depth < 10
                    && self
                        .classes
                        .get(&w)
                        .is_some_and(|c| self.list_needs_io(c, depth + 1)))
        }) || (depth == 0 && self.tables_may_name_classes())
    }

    /// Access tables may answer with a class name that needs I/O; be safe when any class
    /// does.
    fn tables_may_name_classes(&self) -> bool {
        self.classes.values().any(|c| self.list_needs_io(c, 1))
    }

    /// Rewrites and classifies an address as trivial-rewrite does for smtpd.
    pub fn resolve(&self, addr: &str) -> Resolved {
        // An unqualified address is `user@$myorigin`, as trivial-rewrite makes it.
        let (mut local, mut domain) = match addr.rsplit_once('@') {
            Some((l, d)) => (unquote(l), d.trim_end_matches('.').to_ascii_lowercase()),
            None if !addr.is_empty() => (unquote(addr), self.myorigin.clone()),
            None => (unquote(addr), String::new()),
        };
        // A local part that still holds `@` after unquoting is routed ("user@remote"@local).
        for _ in 0..10 {
            let is_local = domain.is_empty() || self.mydestination.matches(&domain);
            if !is_local {
                break;
            }
            if self.swap_bangpath
                && !local.contains('@')
                && let Some((host, user)) = local.split_once('!')
            {
                let (h, u) = (host.to_ascii_lowercase(), user.to_string());
                local = u;
                domain = h.trim_end_matches('.').to_string();
                continue;
            }
            if self.allow_percent_hack
                && !local.contains('@')
                && let Some((user, host)) = local.rsplit_once('%')
            {
                let (u, h) = (user.to_string(), host.to_ascii_lowercase());
                local = u;
                domain = h.trim_end_matches('.').to_string();
                continue;
            }
            break;
        }
        let routed = local.contains(['@', '%', '!']);
        let class = if domain.is_empty() || self.mydestination.matches(&domain) {
            AddrClass::Local
        } else if self.virtual_alias_domains.matches(&domain) {
            AddrClass::VirtualAlias
        } else if self.virtual_mailbox_domains.matches(&domain) {
            AddrClass::VirtualMailbox
        } else if self.relay_domains.matches(&domain) {
            AddrClass::Relay
        } else {
            AddrClass::Default
        };
        let address = if domain.is_empty() {
            local.clone()
        } else {
            format!("{local}@{domain}")
        };
        Resolved {
            address,
            local,
            domain,
            class,
            routed,
        }
    }
}

/// Strips the quotes of a quoted local part (`"a b"` → `a b`).
fn unquote(local: &str) -> String {
    match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut esc = false;
            for c in inner.chars() {
                if esc || c != '\\' {
                    out.push(c);
                    esc = false;
                } else {
                    esc = true;
                }
            }
            out
        }
        None => local.to_string(),
    }
}

/// The result of one check: the refusal (already logged), if any, and the actions.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub reject: Option<Reply>,
    pub actions: Actions,
}

/// Runs the restrictions of `stage` for `cx`, starting from the transaction's actions.
pub fn check(r: &Restrictions, cx: &Context, stage: Stage, actions: Actions) -> Outcome {
    let mut e = Eval::new(r, cx, actions);
    let reject = match stage {
        Stage::Connect => e.check_client(),
        Stage::Helo => e.check_helo(),
        Stage::Mail => e.check_mail(),
        Stage::Rcpt | Stage::Vrfy => e.check_rcpt(),
        Stage::Data => e.check_data(Stage::Data),
        Stage::Eod => e.check_data(Stage::Eod),
    };
    Outcome {
        reject,
        actions: e.actions,
    }
}

/// A deferred decision (`defer_if_permit` / `defer_if_reject`).
#[derive(Debug, Clone)]
struct Defer {
    class: ErrClass,
    reply: Reply,
}

/// One evaluation (Postfix's per-call `SMTPD_STATE` fields).
struct Eval<'a> {
    r: &'a Restrictions,
    cx: &'a Context,
    actions: Actions,
    recursion: u32,
    warn_if_reject: u32,
    defer_if_permit: Option<Defer>,
    defer_if_reject: Option<Defer>,
    /// The reply of the last rejection.
    error: Option<Reply>,
    /// Overrides of the context while delayed stages run (sender/recipient shown).
    recipient: Option<String>,
    sender: Option<String>,
    recipient_rcptmap_checked: bool,
    sender_rcptmap_checked: bool,
    /// Set when an unknown name or bad argument was met: 451 4.3.5.
    discard: bool,
}

impl<'a> Eval<'a> {
    fn new(r: &'a Restrictions, cx: &'a Context, actions: Actions) -> Eval<'a> {
        let discard = actions.discard.is_some();
        Eval {
            r,
            cx,
            actions,
            recursion: 0,
            warn_if_reject: 0,
            defer_if_permit: None,
            defer_if_reject: None,
            error: None,
            recipient: cx.recipient.clone(),
            sender: cx.sender.clone(),
            recipient_rcptmap_checked: false,
            sender_rcptmap_checked: false,
            discard,
        }
    }

    fn reset(&mut self) {
        self.recursion = 0;
        self.warn_if_reject = 0;
        self.defer_if_reject = None;
    }

    /// `QUEUEID: what: STAGE from name[addr]: text; from=<> to=<> proto= helo=<>`.
    fn log_whatsup(&self, what: &str, text: &str) {
        let cx = self.cx;
        let stage = cx.stage.map_or("CONNECT", |s| s.name(cx.extended));
        let mut line = format!(
            "{}: {what}: {stage} from {}: {};",
            cx.queue_id.as_deref().unwrap_or("NOQUEUE"),
            cx.namaddr(),
            clean(text)
        );
        if let Some(s) = &self.sender {
            line.push_str(&format!(" from=<{}>", clean(s)));
        }
        if let Some(rc) = &self.recipient {
            line.push_str(&format!(" to=<{}>", clean(rc)));
        }
        if !cx.protocol.is_empty() {
            line.push_str(&format!(" proto={}", cx.protocol));
        }
        if let Some(h) = &cx.helo {
            line.push_str(&format!(" helo=<{}>", clean(h)));
        }
        if let Some(m) = &cx.sasl_method {
            line.push_str(&format!(" sasl_method={m}"));
        }
        if let Some(u) = &cx.sasl_username {
            line.push_str(&format!(" sasl_username={}", clean(u)));
        }
        oxipost_log::info!("{line}");
    }

    /// Postfix's `smtpd_check_reject`.
    fn reject(&mut self, class: ErrClass, code: u16, dsn: &str, text: String) -> Status {
        let warn = self.warn_if_reject > 0 && !matches!(class, ErrClass::Software | ErrClass::Data);
        let mut reply = Reply::new(code, dsn, text);
        if !(400..=599).contains(&code) {
            oxipost_log::warning!(
                "SMTP reply code configuration error: {code} {dsn} {}",
                clean(&reply.text)
            );
            reply = Reply::new(450, "4.7.1", "Service unavailable");
        } else if !dsn_valid(dsn) {
            oxipost_log::warning!(
                "DSN detail code configuration error: {code} {dsn} {}",
                clean(&reply.text)
            );
            reply = Reply::new(450, "4.7.1", "Service unavailable");
        }
        reply.text = printable(&reply.text, 500);
        if !warn
            && reply.code >= 500
            && let Some(d) = self.defer_if_reject.take()
        {
            self.warn_if_reject = 0;
            return self.reject(d.class, d.reply.code, &d.reply.dsn, d.reply.text);
        }
        if self.r.soft_bounce && reply.code >= 500 {
            reply.code -= 100;
        }
        let first = if reply.code >= 500 { '5' } else { '4' };
        reply.dsn = format!("{first}{}", &reply.dsn[1..]);
        self.log_whatsup(
            if warn { "reject_warning" } else { "reject" },
            &format!("{} {} {}", reply.code, reply.dsn, reply.text),
        );
        if warn {
            Status::Dunno
        } else {
            self.error = Some(reply);
            Status::Reject
        }
    }

    fn defer_if(which: &mut Option<Defer>, class: ErrClass, code: u16, dsn: &str, text: String) {
        if which.is_none() {
            *which = Some(Defer {
                class,
                reply: Reply::new(code, dsn, text),
            });
        }
    }

    /// Postfix's `DEFER_IF_PERMIT*`: remember the deferral when allowed, else reject now.
    fn defer_if_permit(&mut self, allowed: bool, code: u16, dsn: &str, text: String) -> Status {
        if self.warn_if_reject == 0 && allowed {
            Self::defer_if(&mut self.defer_if_permit, ErrClass::Policy, code, dsn, text);
            Status::Dunno
        } else {
            self.reject(ErrClass::Policy, code, dsn, text)
        }
    }

    fn server_error(&mut self) -> Status {
        self.reject(ErrClass::Software, 451, "4.3.5", SERVER_ERROR.to_string())
    }

    fn dict_retry(&mut self, reply_name: &str) -> Status {
        self.reject(
            ErrClass::Data,
            451,
            "4.3.0",
            format!("<{reply_name}>: Temporary lookup failure"),
        )
    }

    fn permit_reply_if_deferred(&mut self, status: Status) -> Status {
        if status != Status::Reject
            && let Some(d) = self.defer_if_permit.clone()
        {
            return self.reject(d.class, d.reply.code, &d.reply.dsn, d.reply.text);
        }
        status
    }

    // ---- the protocol stages ------------------------------------------------

    fn check_client(&mut self) -> Option<Reply> {
        self.defer_if_permit = None;
        self.reset();
        let namaddr = self.cx.namaddr();
        let list = self.r.client.clone();
        let status = if list.is_empty() {
            Status::Dunno
        } else {
            self.generic(&list, &namaddr, CLIENT, Some("check_client_access"))
        };
        self.take_reject(status)
    }

    fn check_helo(&mut self) -> Option<Reply> {
        let helo = self.cx.helo.clone()?;
        self.reset();
        let list = self.r.helo.clone();
        let status = if list.is_empty() {
            Status::Dunno
        } else {
            self.generic(&list, &helo, HELO, Some("check_helo_access"))
        };
        self.take_reject(status)
    }

    fn check_mail(&mut self) -> Option<Reply> {
        let sender = self.sender.clone()?;
        self.sender_rcptmap_checked = false;
        self.reset();
        let list = self.r.sender.clone();
        let mut status = if list.is_empty() {
            Status::Dunno
        } else {
            self.generic(&list, &sender, SENDER, Some("check_sender_access"))
        };
        if self.r.reject_unlisted_sender
            && status != Status::Reject
            && !self.sender_rcptmap_checked
            && !self.discard
            && !sender.is_empty()
        {
            status = self.check_sender_rcpt_maps(&sender);
        }
        self.take_reject(status)
    }

    fn check_rcpt(&mut self) -> Option<Reply> {
        let recipient = self.recipient.clone()?;
        if recipient.eq_ignore_ascii_case("postmaster") {
            return None;
        }
        self.recipient_rcptmap_checked = false;
        if self.r.delay_reject {
            // Each delayed stage on its own; a defer_if_permit flag carries over.
            if let Some(rej) = self.check_client() {
                return Some(rej);
            }
            if let Some(rej) = self.check_helo() {
                return Some(rej);
            }
            if let Some(rej) = self.check_mail() {
                return Some(rej);
            }
        } else {
            self.defer_if_permit = None;
        }
        self.reset();
        let lists = if self.r.relay_before_recipient {
            [self.r.relay.clone(), self.r.recipient.clone()]
        } else {
            [self.r.recipient.clone(), self.r.relay.clone()]
        };
        let mut status = Status::Dunno;
        for l in &lists {
            status = if l.is_empty() {
                Status::Dunno
            } else {
                self.generic(l, &recipient, RECIPIENT, Some("check_recipient_access"))
            };
            if status == Status::Reject {
                break;
            }
        }
        status = self.permit_reply_if_deferred(status);
        if self.r.reject_unlisted_recipient
            && status != Status::Reject
            && !self.recipient_rcptmap_checked
            && !self.discard
        {
            status = self.check_recipient_rcpt_maps(&recipient);
        }
        self.take_reject(status)
    }

    fn check_data(&mut self, stage: Stage) -> Option<Reply> {
        if self.cx.rcpt_count > 1 {
            self.recipient = None;
        }
        self.defer_if_permit = None;
        self.reset();
        let (list, name, class) = if stage == Stage::Data {
            (self.r.data.clone(), "DATA", DATA)
        } else {
            (self.r.eod.clone(), "END-OF-MESSAGE", EOD)
        };
        let status = if list.is_empty() {
            Status::Dunno
        } else {
            self.generic(&list, name, class, None)
        };
        let status = self.permit_reply_if_deferred(status);
        self.take_reject(status)
    }

    fn take_reject(&mut self, status: Status) -> Option<Reply> {
        if status == Status::Reject {
            self.error.take()
        } else {
            None
        }
    }

    // ---- the list walker ----------------------------------------------------

    /// Postfix's `generic_checks`.
    fn generic(
        &mut self,
        list: &[String],
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> Status {
        let saved = self.recursion;
        self.recursion += 1;
        let mut status = Status::Dunno;
        let mut i = 0;
        while i < list.len() {
            if self.discard {
                break;
            }
            let word = list[i].as_str();
            let lower = word.to_ascii_lowercase();
            if lower == "warn_if_reject" {
                if self.warn_if_reject == 0 {
                    self.warn_if_reject = self.recursion;
                }
                i += 1;
                continue;
            }
            // A bare table is short for the stage's check_*_access.
            let (name, arg) = if word.contains(':') || word.starts_with('{') {
                match def_acl {
                    Some(acl) => (acl.to_string(), Some(word)),
                    None => {
                        oxipost_log::warning!(
                            "specify one of (check_client_access, check_reverse_client_hostname_access, check_helo_access, check_sender_access, check_recipient_access, check_etrn_access) before {reply_class} restriction \"{word}\""
                        );
                        status = self.server_error();
                        break;
                    }
                }
            } else if takes_arg(&lower) {
                i += 1;
                (lower.clone(), list.get(i).map(String::as_str))
            } else {
                (lower.clone(), None)
            };
            status = self.one(&name, arg, reply_name, reply_class, def_acl);
            if self.warn_if_reject >= self.recursion {
                self.warn_if_reject = 0;
            }
            if status != Status::Dunno {
                break;
            }
            if self.defer_if_permit.is_some() && self.defer_if_reject.is_some() {
                break;
            }
            i += 1;
        }
        self.recursion = saved;
        if self.warn_if_reject >= self.recursion {
            self.warn_if_reject = 0;
        }
        status
    }

    /// One restriction.
    fn one(
        &mut self,
        name: &str,
        arg: Option<&str>,
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> Status {
        let cx = self.cx;
        let r = self.r;
        // Restrictions with an argument need it.
        if takes_arg(name) {
            let needs_table = name.starts_with("check_") && name != "check_policy_service";
            match arg {
                Some(a) if !needs_table || a.contains(':') || a.starts_with('{') => {}
                _ => {
                    if needs_table {
                        oxipost_log::warning!(
                            "restriction {name}: bad argument \"{}\": need maptype:mapname",
                            arg.unwrap_or("")
                        );
                        return self.server_error();
                    }
                    if name == "check_policy_service" {
                        oxipost_log::warning!(
                            "restriction check_policy_service must be followed by transport:server"
                        );
                        return self.server_error();
                    }
                    oxipost_log::warning!("restriction {name} requires domain name argument");
                    return Status::Dunno;
                }
            }
        }
        let arg = arg.unwrap_or("");
        let helo = cx.helo.clone();
        let sender = self.sender.clone();
        let recipient = self.recipient.clone();
        match name {
            "permit" => Status::Ok,
            "reject" => {
                let code = r.codes.reject;
                self.reject(
                    ErrClass::Policy,
                    code,
                    "5.7.1",
                    format!("<{reply_name}>: {reply_class} rejected: Access denied"),
                )
            }
            "defer" => {
                let code = r.codes.defer;
                self.reject(
                    ErrClass::Policy,
                    code,
                    "4.3.2",
                    format!("<{reply_name}>: {reply_class} rejected: Try again later"),
                )
            }
            "defer_if_permit" => self.defer_if_permit(
                true,
                450,
                "4.7.0",
                format!("<{reply_name}>: {reply_class} rejected: defer_if_permit requested"),
            ),
            "defer_if_reject" => {
                Self::defer_if(
                    &mut self.defer_if_reject,
                    ErrClass::Policy,
                    450,
                    "4.7.0",
                    format!("<{reply_name}>: {reply_class} rejected: defer_if_reject requested"),
                );
                Status::Dunno
            }
            "reject_unauth_pipelining" => {
                if cx.ill_pipelining {
                    self.reject(
                        ErrClass::Protocol,
                        503,
                        "5.5.0",
                        format!(
                            "<{reply_name}>: {reply_class} rejected: Improper use of SMTP command pipelining"
                        ),
                    )
                } else {
                    Status::Dunno
                }
            }
            "check_policy_service" => self.policy(arg, reply_name, reply_class, def_acl),
            "reject_plaintext_session" => {
                if cx.tls.is_none() {
                    let code = r.codes.plaintext;
                    self.reject(
                        ErrClass::Policy,
                        code,
                        "4.7.1",
                        "Session encryption is required".into(),
                    )
                } else {
                    Status::Dunno
                }
            }
            // Client name and address.
            "reject_unknown_client_hostname" | "reject_unknown_client" => {
                if cx.name_status != PeerStatus::Ok {
                    let code = if cx.name_status == PeerStatus::Perm {
                        r.codes.unknown_client
                    } else {
                        450
                    };
                    self.reject(
                        ErrClass::Policy,
                        code,
                        "4.7.25",
                        format!(
                            "Client host rejected: cannot find your hostname, [{}]",
                            cx.addr
                        ),
                    )
                } else {
                    Status::Dunno
                }
            }
            "reject_unknown_reverse_client_hostname" => {
                if cx.reverse_status != PeerStatus::Ok {
                    let code = if cx.reverse_status == PeerStatus::Perm {
                        r.codes.unknown_client
                    } else {
                        450
                    };
                    self.reject(
                        ErrClass::Policy,
                        code,
                        "4.7.1",
                        format!(
                            "Client host rejected: cannot find your reverse hostname, [{}]",
                            cx.addr
                        ),
                    )
                } else {
                    Status::Dunno
                }
            }
            "permit_mynetworks" => match r.mynetworks.matches(cx.ip, &cx.name, &cx.addr) {
                Ok(true) => Status::Ok,
                Ok(false) => Status::Dunno,
                Err(e) => {
                    oxipost_log::warning!("mynetworks: {e}");
                    self.dict_retry(reply_name)
                }
            },
            "check_client_access" => {
                let (name, addr) = (cx.name.clone(), cx.addr.clone());
                self.check_namadr_access(arg, &name, &addr, &cx.namaddr(), CLIENT, def_acl)
            }
            "check_reverse_client_hostname_access" => {
                let (name, addr) = (cx.reverse_name.clone(), cx.addr.clone());
                let st = self.check_namadr_access(arg, &name, &addr, &name, REV_CLIENT, def_acl);
                self.forbid_allowlist(name_of("check_reverse_client_hostname_access"), st, &name)
            }
            "reject_rbl_client" | "reject_rbl" => self.reject_rbl_addr(arg, CLIENT),
            "permit_dnswl_client" => self.permit_dnswl_addr(arg, CLIENT),
            "reject_rhsbl_client" => {
                if cx.name.eq_ignore_ascii_case("unknown") {
                    Status::Dunno
                } else {
                    let n = cx.name.clone();
                    self.reject_rbl_domain(arg, &n, CLIENT)
                }
            }
            "permit_rhswl_client" => {
                if cx.name.eq_ignore_ascii_case("unknown") {
                    Status::Dunno
                } else {
                    let n = cx.name.clone();
                    self.permit_dnswl_domain(arg, &n, CLIENT)
                }
            }
            "reject_rhsbl_reverse_client" => {
                if cx.reverse_name.eq_ignore_ascii_case("unknown") {
                    Status::Dunno
                } else {
                    let n = cx.reverse_name.clone();
                    self.reject_rbl_domain(arg, &n, REV_CLIENT)
                }
            }
            "check_sasl_access" => {
                if !r.sasl_enabled {
                    oxipost_log::warning!("restriction `{name}' ignored: no SASL support");
                    Status::Dunno
                } else if let Some(u) = cx.sasl_username.clone().filter(|u| !u.is_empty()) {
                    let shown = printable(&u, 500).replace(' ', "_");
                    self.check_access(arg, &u, &shown, SASL_USER, def_acl, true)
                        .0
                } else {
                    Status::Dunno
                }
            }
            // HELO.
            "check_helo_access" => match helo {
                Some(h) => self.check_domain_access(arg, &h, &h, HELO, def_acl).0,
                None => Status::Dunno,
            },
            "reject_invalid_helo_hostname" | "reject_invalid_hostname" => match helo {
                Some(h) if h.starts_with('[') => self.reject_invalid_hostaddr(&h, HELO),
                Some(h) => {
                    let t = dup_if_truncate(&h);
                    if !valid_hostname(t) && !valid_hostaddr(t) {
                        let code = r.codes.invalid_hostname;
                        self.reject(
                            ErrClass::Policy,
                            code,
                            "5.5.2",
                            format!("<{h}>: {HELO} rejected: Invalid name"),
                        )
                    } else {
                        Status::Dunno
                    }
                }
                None => Status::Dunno,
            },
            "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => match helo {
                Some(h) if h.starts_with('[') => self.reject_invalid_hostaddr(&h, HELO),
                Some(h) => {
                    let t = dup_if_truncate(&h);
                    if !valid_utf8_hostname(t, cx.smtputf8) || !t.contains('.') {
                        let code = r.codes.non_fqdn;
                        self.reject(
                            ErrClass::Policy,
                            code,
                            "5.5.2",
                            format!("<{h}>: {HELO} rejected: need fully-qualified hostname"),
                        )
                    } else {
                        Status::Dunno
                    }
                }
                None => Status::Dunno,
            },
            "reject_unknown_helo_hostname" | "reject_unknown_hostname" => match helo {
                Some(h) if h.starts_with('[') => self.reject_invalid_hostaddr(&h, HELO),
                Some(h) => self.reject_unknown_hostname(&h, HELO),
                None => Status::Dunno,
            },
            "reject_rhsbl_helo" => match helo {
                Some(h) => self.reject_rbl_domain(arg, &h, HELO),
                None => Status::Dunno,
            },
            // Sender.
            "check_sender_access" => match sender {
                Some(s) if s.is_empty() => {
                    let key = r.null_key.clone();
                    self.check_access(arg, &key, &s, SENDER, def_acl, true).0
                }
                Some(s) => self.check_mail_access(arg, &s, SENDER, def_acl),
                None => Status::Dunno,
            },
            "reject_unknown_sender_domain" | "reject_unknown_address" => match sender {
                Some(s) if !s.is_empty() => self.reject_unknown_address(&s, SENDER),
                _ => Status::Dunno,
            },
            "reject_non_fqdn_sender" => match sender {
                Some(s) if !s.is_empty() => self.reject_non_fqdn_address(&s, SENDER),
                _ => Status::Dunno,
            },
            "reject_rhsbl_sender" => match sender {
                Some(s) if !s.is_empty() => self.reject_rbl_domain(arg, &s, SENDER),
                _ => Status::Dunno,
            },
            "reject_unlisted_sender" => match sender {
                Some(s) if !s.is_empty() => self.check_sender_rcpt_maps(&s),
                _ => Status::Dunno,
            },
            "reject_sender_login_mismatch"
            | "reject_authenticated_sender_login_mismatch"
            | "reject_known_sender_login_mismatch"
            | "reject_unauthenticated_sender_login_mismatch" => {
                if !r.sasl_enabled {
                    oxipost_log::warning!("restriction `{name}' ignored: no SASL support");
                    return Status::Dunno;
                }
                match sender {
                    Some(s) if !s.is_empty() => self.sender_login_mismatch(name, &s),
                    _ => Status::Dunno,
                }
            }
            // Recipient.
            "check_recipient_access" => match recipient {
                Some(rc) => self.check_mail_access(arg, &rc, RECIPIENT, def_acl),
                None => Status::Dunno,
            },
            "reject_unverified_sender" => match sender {
                Some(s) if !s.is_empty() => self.reject_unverified(&s, SENDER),
                _ => Status::Dunno,
            },
            "reject_unverified_recipient" => match recipient {
                Some(rc) if !rc.is_empty() => self.reject_unverified(&rc, RECIPIENT),
                _ => Status::Dunno,
            },
            "permit_mx_backup" => match recipient {
                Some(rc) => self.permit_mx_backup(&rc, reply_name, reply_class),
                None => Status::Dunno,
            },
            n if server::is_server_access(n) => self.check_server_restriction(n, arg, def_acl),
            "permit_auth_destination" => match recipient {
                Some(rc) if self.permit_auth_destination(&rc) => Status::Ok,
                _ => Status::Dunno,
            },
            "reject_unauth_destination" | "defer_unauth_destination" => match recipient {
                Some(rc) if !self.permit_auth_destination(&rc) => {
                    let (code, dsn) = if name == "reject_unauth_destination" {
                        (r.codes.relay, "5.7.1")
                    } else {
                        (r.codes.relay - 100, "4.7.1")
                    };
                    self.reject(
                        ErrClass::Policy,
                        code,
                        dsn,
                        format!("<{rc}>: Relay access denied"),
                    )
                }
                _ => Status::Dunno,
            },
            "permit_sasl_authenticated" => {
                if cx.sasl_username.is_some() {
                    Status::Ok
                } else {
                    Status::Dunno
                }
            }
            "reject_unknown_recipient_domain" => match recipient {
                Some(rc) => self.reject_unknown_address(&rc, RECIPIENT),
                None => Status::Dunno,
            },
            "reject_non_fqdn_recipient" => match recipient {
                Some(rc) => self.reject_non_fqdn_address(&rc, RECIPIENT),
                None => Status::Dunno,
            },
            "reject_rhsbl_recipient" => match recipient {
                Some(rc) => self.reject_rbl_domain(arg, &rc, RECIPIENT),
                None => Status::Dunno,
            },
            "reject_unlisted_recipient" | "check_recipient_maps" => match recipient {
                Some(rc) if !rc.is_empty() => self.check_recipient_rcpt_maps(&rc),
                _ => Status::Dunno,
            },
            "reject_multi_recipient_bounce" => {
                let at_rcpt = matches!(cx.stage, Some(Stage::Rcpt));
                if sender.as_deref() == Some("") && cx.rcpt_count > usize::from(!at_rcpt) {
                    let code = r.codes.multi_rcpt_bounce;
                    self.reject(
                        ErrClass::Policy,
                        code,
                        "5.5.3",
                        format!("<{reply_name}>: {reply_class} rejected: Multi-recipient bounce"),
                    )
                } else {
                    Status::Dunno
                }
            }
            other => {
                if let Some(list) = r.classes.get(other).cloned() {
                    if self.recursion > 100 {
                        return self.server_error();
                    }
                    return self.generic(&list, reply_name, reply_class, def_acl);
                }
                oxipost_log::warning!("unknown smtpd restriction: \"{other}\"");
                self.server_error()
            }
        }
    }

    /// Postfix's `forbid_allowlist`: some lookups may never permit.
    fn forbid_allowlist(&mut self, name: &str, status: Status, target: &str) -> Status {
        if !self.discard && status == Status::Ok {
            oxipost_log::warning!("restriction {name} returns OK for {target}");
            oxipost_log::warning!("this is not allowed for security reasons");
            oxipost_log::warning!("use DUNNO instead of OK if you want to make an exception");
            return self.server_error();
        }
        status
    }

    fn reject_invalid_hostaddr(&mut self, h: &str, class: &str) -> Status {
        let inner = h
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(h);
        let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
        if inner.parse::<IpAddr>().is_err() {
            let code = self.r.codes.invalid_hostname;
            self.reject(
                ErrClass::Policy,
                code,
                "5.5.2",
                format!("<{h}>: {class} rejected: invalid ip address"),
            )
        } else {
            Status::Dunno
        }
    }

    fn reject_non_fqdn_address(&mut self, addr: &str, class: &str) -> Status {
        let domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
        if domain.starts_with('[') && domain.ends_with(']') {
            return Status::Dunno;
        }
        let d = dup_if_truncate(domain);
        if d.is_empty() || !valid_utf8_hostname(d, self.cx.smtputf8) || !d.contains('.') {
            let code = self.r.codes.non_fqdn;
            return self.reject(
                ErrClass::Policy,
                code,
                "4.5.2",
                format!("<{addr}>: {class} rejected: need fully-qualified address"),
            );
        }
        Status::Dunno
    }

    /// `permit_auth_destination`: final delivery or relay_domains, not routed.
    fn permit_auth_destination(&self, rcpt: &str) -> bool {
        let res = self.r.resolve(rcpt);
        if !res.address.contains('@') {
            return true;
        }
        if !self.r.allow_untrusted_routing && res.routed {
            return false;
        }
        matches!(
            res.class,
            AddrClass::Local
                | AddrClass::VirtualAlias
                | AddrClass::VirtualMailbox
                | AddrClass::Relay
        )
    }

    /// Postfix's `reject_*sender_login_mismatch`: `smtpd_sender_login_maps` maps a sender
    /// address (full address, the local part when its domain is local, `@domain`) to its
    /// owners, SASL login names separated by commas or white space and compared without
    /// case. A logged-in client must own the sender (`known`: only when the address has
    /// owners); a client that is not logged in may not use an owned address.
    fn sender_login_mismatch(&mut self, name: &str, sender: &str) -> Status {
        if self.r.sender_login_maps.is_none() {
            return Status::Dunno;
        }
        let user = self.cx.sasl_username.clone().filter(|u| !u.is_empty());
        let check = match (&user, name) {
            (Some(_), "reject_unauthenticated_sender_login_mismatch") => return Status::Dunno,
            (None, "reject_authenticated_sender_login_mismatch") => return Status::Dunno,
            (Some(_), n) => n != "reject_known_sender_login_mismatch",
            (None, _) => false,
        };
        let Some(TableRef::Open(maps)) = self.r.sender_login_maps.clone() else {
            return self.dict_retry(sender);
        };
        let res = self.r.resolve(sender);
        let mydestination = &self.r.mydestination;
        let is_local = |d: &str| mydestination.matches(d);
        let q = AddrQuery {
            delimiter: &self.r.recipient_delimiter,
            is_local: Some(&is_local),
            at_domain: true,
        };
        let owners = match maps.lookup_addr(&res.address, &q) {
            Ok(o) => o.map(|m| m.value),
            Err(e) => {
                oxipost_log::warning!("{e}");
                return self.dict_retry(sender);
            }
        };
        match (user, owners) {
            (Some(u), owners) => {
                let owned = match owners {
                    Some(o) => o
                        .split(|c: char| c == ',' || c.is_ascii_whitespace())
                        .any(|n| n.to_lowercase() == u.to_lowercase()),
                    // Without owners only the strict forms (not `known`) reject.
                    None => !check,
                };
                if owned {
                    return Status::Dunno;
                }
                self.reject(
                    ErrClass::Policy,
                    553,
                    "5.7.1",
                    format!(
                        "<{sender}>: Sender address rejected: not owned by user {}",
                        clean(&u)
                    ),
                )
            }
            (None, Some(_)) => self.reject(
                ErrClass::Policy,
                553,
                "5.7.1",
                format!("<{sender}>: Sender address rejected: not logged in"),
            ),
            (None, None) => Status::Dunno,
        }
    }

    // ---- recipient validation (reject_unlisted_*) -----------------------------

    fn check_recipient_rcpt_maps(&mut self, rcpt: &str) -> Status {
        if self.recipient_rcptmap_checked {
            return Status::Dunno;
        }
        if self.warn_if_reject == 0 {
            self.recipient_rcptmap_checked = true;
        }
        self.check_rcpt_maps(rcpt, RECIPIENT)
    }

    fn check_sender_rcpt_maps(&mut self, sender: &str) -> Status {
        if self.sender_rcptmap_checked {
            return Status::Dunno;
        }
        if self.warn_if_reject == 0 {
            self.sender_rcptmap_checked = true;
        }
        self.check_rcpt_maps(sender, SENDER)
    }

    /// Looks an address up in one table; `Err` after logging when it cannot answer.
    fn find(&self, t: &TableRef, addr: &str, local: bool) -> Result<bool, ()> {
        match t {
            TableRef::Broken(why) => {
                oxipost_log::warning!("table lookup error for \"{}\": {why}", clean(addr));
                Err(())
            }
            TableRef::Open(m) => {
                let is_local = |_: &str| local;
                let q = AddrQuery {
                    delimiter: &self.r.recipient_delimiter,
                    is_local: Some(&is_local),
                    at_domain: true,
                };
                match m.lookup_addr(addr, &q) {
                    Ok(v) => Ok(v.is_some()),
                    Err(e) => {
                        oxipost_log::warning!("{e}");
                        Err(())
                    }
                }
            }
        }
    }

    fn check_rcpt_maps(&mut self, addr: &str, class: &str) -> Status {
        let r = self.r;
        let res = r.resolve(addr);
        let dsn = if class == SENDER { "5.1.0" } else { "5.1.1" };
        // Canonical and virtual alias matches make an address valid.
        let local = res.class == AddrClass::Local;
        let mut aliases: Vec<&TableRef> = r.canonical_maps.iter().collect();
        if let Some(v) = &r.virtual_alias_maps {
            aliases.push(v);
        }
        for t in aliases {
            match self.find(t, &res.address, local) {
                Ok(true) => return Status::Dunno,
                Ok(false) => {}
                Err(()) => return self.dict_retry(addr),
            }
        }
        let unknown = |table: &str| {
            if r.show_table_name {
                format!("<{addr}>: {class} rejected: User unknown in {table}")
            } else {
                format!("<{addr}>: {class} rejected: User unknown")
            }
        };
        match res.class {
            AddrClass::Local => {
                if !r.check_local_recipients {
                    return Status::Dunno;
                }
                let lower = res.local.to_ascii_lowercase();
                let base = oxipost_maps::addr::split_extension(&lower, &r.recipient_delimiter).0;
                if base == r.double_bounce_sender.to_ascii_lowercase()
                    || base == "postmaster"
                    || base == "mailer-daemon"
                {
                    return Status::Dunno;
                }
                let known = match &r.local_recipient_maps {
                    Some(t) => match self.find(t, &res.address, true) {
                        Ok(found) => found || r.local_users.contains(base),
                        Err(()) => return self.dict_retry(addr),
                    },
                    None => {
                        crate::policy::is_known_local_user(
                            &r.local_users,
                            &r.recipient_delimiter,
                            &res.local,
                        ) || match &r.alias_maps {
                            Some(t) => match self.find(t, &res.address, true) {
                                Ok(found) => found,
                                Err(()) => return self.dict_retry(addr),
                            },
                            None => false,
                        }
                    }
                };
                if known {
                    Status::Dunno
                } else {
                    let code = r.codes.unknown_local;
                    self.reject(
                        ErrClass::Bounce,
                        code,
                        dsn,
                        unknown("local recipient table"),
                    )
                }
            }
            AddrClass::VirtualAlias => {
                // Reached only when no alias matched above.
                let code = r.codes.unknown_virtual_alias;
                self.reject(ErrClass::Bounce, code, dsn, unknown("virtual alias table"))
            }
            AddrClass::VirtualMailbox => match &r.virtual_mailbox_maps {
                Some(t) => match self.find(t, &res.address, false) {
                    Ok(true) => Status::Dunno,
                    Ok(false) => {
                        let code = r.codes.unknown_virtual_mailbox;
                        self.reject(
                            ErrClass::Bounce,
                            code,
                            dsn,
                            unknown("virtual mailbox table"),
                        )
                    }
                    Err(()) => self.dict_retry(addr),
                },
                None => Status::Dunno,
            },
            AddrClass::Relay => match &r.relay_recipient_maps {
                Some(t) => match self.find(t, &res.address, false) {
                    Ok(true) => Status::Dunno,
                    Ok(false) => {
                        let code = r.codes.unknown_relay;
                        self.reject(
                            ErrClass::Bounce,
                            code,
                            dsn,
                            unknown("relay recipient table"),
                        )
                    }
                    Err(()) => self.dict_retry(addr),
                },
                None => Status::Dunno,
            },
            AddrClass::Default => Status::Dunno,
        }
    }
}

fn name_of(s: &'static str) -> &'static str {
    s
}

/// Truncates a name ending in one dot (not two), as Postfix's `dup_if_truncate`.
fn dup_if_truncate(name: &str) -> &str {
    if name.len() > 1 && name.ends_with('.') && !name.ends_with("..") {
        &name[..name.len() - 1]
    } else {
        name
    }
}

/// RFC 1035 host name syntax (Postfix's `valid_hostname`): labels of letters, digits and
/// hyphens (underscore tolerated), not starting or ending with a hyphen, at most 63
/// octets, 255 in all, not all-numeric.
pub fn valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut all_numeric = true;
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return false;
        }
        if label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
        if !label.bytes().all(|b| b.is_ascii_digit()) {
            all_numeric = false;
        }
    }
    !all_numeric
}

/// `valid_utf8_hostname`: ASCII names as [`valid_hostname`]; non-ASCII only with SMTPUTF8.
fn valid_utf8_hostname(name: &str, smtputf8: bool) -> bool {
    if name.is_ascii() {
        valid_hostname(name)
    } else {
        smtputf8
            && name
                .split('.')
                .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
    }
}

/// A dotted-quad or IPv6 address (Postfix's `valid_hostaddr`).
pub fn valid_hostaddr(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok()
}

/// RFC 3463 `d.ddd.ddd` with a 4 or 5 class.
fn dsn_valid(dsn: &str) -> bool {
    let parts: Vec<&str> = dsn.split('.').collect();
    parts.len() == 3
        && (parts[0] == "4" || parts[0] == "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Non-printable characters become spaces; at most `max` characters.
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// Postfix's `smtpd_dsn_fix`: address-status codes fitting the reply class.
fn dsn_fix(dsn: &str, class: &str) -> String {
    let Some(rest) = dsn.get(1..) else {
        return dsn.to_string();
    };
    if !rest.starts_with(".1.") {
        return dsn.to_string();
    }
    let first = &dsn[..1];
    let detail = &rest[3..];
    match class {
        SENDER => match detail {
            "1" | "3" | "4" | "5" | "6" | "7" => format!("{first}.1.7"),
            "2" | "8" => format!("{first}.1.8"),
            _ => dsn.to_string(),
        },
        RECIPIENT => match detail {
            "7" => format!("{first}.1.1"),
            "8" => format!("{first}.1.2"),
            _ => dsn.to_string(),
        },
        _ => format!("{first}.7.1"),
    }
}

/// Splits an optional RFC 3463 code off the front of a text (Postfix's `dsn_split`).
fn dsn_split(default: &str, text: &str) -> (String, String) {
    let t = text.trim_start();
    let (word, rest) = t.split_once([' ', '\t']).unwrap_or((t, ""));
    if dsn_valid(word) {
        (word.to_string(), rest.trim_start().to_string())
    } else {
        (default.to_string(), t.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_access_names_are_known_take_a_table_and_need_io() {
        for (name, _, _) in server::SERVER_ACCESS {
            assert!(
                is_known(name) && takes_arg(name) && needs_io(name),
                "{name}"
            );
        }
        assert!(is_known("permit_mynetworks") && !takes_arg("permit_mynetworks"));
        assert!(!needs_io("permit_mynetworks"));
        assert!(!is_known("check_client_mx_acces"));
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("mail.example.com"));
        assert!(!valid_hostname("-bad.example"));
        assert!(!valid_hostname("a..b"));
        assert!(!valid_hostname("1.2.3.4"));
        assert!(!valid_hostname("bad name"));
        assert_eq!(dup_if_truncate("host.example."), "host.example");
        assert_eq!(dup_if_truncate("host.."), "host..");
    }

    #[test]
    fn dsn() {
        assert_eq!(
            dsn_split("5.7.1", "5.7.9 go away"),
            ("5.7.9".into(), "go away".into())
        );
        assert_eq!(
            dsn_split("5.7.1", "go away"),
            ("5.7.1".into(), "go away".into())
        );
        assert_eq!(dsn_fix("5.1.1", SENDER), "5.1.7");
        assert_eq!(dsn_fix("5.1.1", CLIENT), "5.7.1");
        assert_eq!(dsn_fix("5.7.1", CLIENT), "5.7.1");
        assert!(dsn_valid("4.3.0"));
        assert!(!dsn_valid("6.0.0"));
    }

    #[test]
    fn unquoting() {
        assert_eq!(unquote("\"user@remote\""), "user@remote");
        assert_eq!(unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote("plain"), "plain");
    }
}
