//! `smtp` and `lmtp`: oxipost's smtp(8)/lmtp(8) delivery agents, one program. qmgr hands
//! them delivery requests for non-local recipients (`default_transport`,
//! `relay_transport`, `transport_maps`) with a next hop: `[host]:port` (no MX lookup),
//! a domain (MX lookup, RFC 5321 §5), or for LMTP `unix:/path` / `inet:host:port`. The
//! agent connects, speaks ESMTP (or LMTP, RFC 2033) through the sans-IO core in
//! `oxipost-smtp-client-proto`, and answers with one result per recipient.
//!
//! Started as `lmtp` (the program name, or the master.cf service name) it runs in LMTP
//! mode and reads `lmtp_*` parameters where they are set.
//!
//! Modules: [`settings`] (typed main.cf), [`dest`] (next hop → servers, MX),
//! [`conn`] (sockets, TLS, session set-up, the transaction loop), [`tls`] (levels,
//! policy, verification), [`sasl`] (credentials and mechanisms), [`generic`]
//! (`smtp_generic_maps`), [`deliver`] (one request, MX fallback, connection reuse), [`report`] (log lines), [`service`] (the protocol with
//! qmgr).
//!
//! Architecture Invariant: the protocol is in the sans-IO core; this crate owns sockets,
//! time limits, TLS and policy. Nothing here panics on peer data; a peer's text reaches
//! logs only through the core's sanitised reply lines.

pub mod conn;
pub mod deliver;
pub mod dest;
pub mod generic;
pub mod report;
pub mod sasl;
pub mod service;
pub mod settings;
pub mod tls;

use std::process::ExitCode;
use std::time::Duration;

const HELP: &str = "\
usage: smtp|lmtp [-n service] [-t type] [-v] [-o name=value]...

oxipost's SMTP/LMTP delivery agent. It is started by master (master.cf:
`smtp unix - - n - - smtp`, `relay unix - - n - - smtp`, `lmtp unix - - n - - lmtp`) with its
listening socket on descriptor 5 and OXIPOST_LISTEN_FDS set, and reads main.cf from
MAIL_CONFIG (default /etc/oxipost). Parameters: relayhost (via qmgr), smtp_helo_name,
smtp_*_timeout, smtp_bind_address, smtp_bind_address6, inet_protocols, smtp_host_lookup,
smtp_mx_address_limit, smtp_mx_session_limit, smtp_skip_5xx_greeting,
smtp_connection_cache_time_limit, smtp_discard_ehlo_keywords, smtp_tls_security_level,
smtp_tls_policy_maps, smtp_tls_CAfile, smtp_tls_CApath, smtp_tls_verify_cert_match,
smtp_tls_secure_cert_match, smtp_sasl_auth_enable, smtp_sasl_password_maps,
smtp_sasl_security_options, smtp_sasl_tls_security_options, smtp_sasl_mechanism_filter,
smtp_sasl_auth_soft_bounce, smtp_generic_maps, smtp_connection_cache_on_demand,
smtp_connection_cache_destinations, smtp_connection_reuse_time_limit, smtp_fallback_relay,
inet_interfaces and proxy_interfaces (MX loop detection), oxipost_dns_servers; lmtp_* variants in
LMTP mode.
";

/// The program: `program` is `smtp` or `lmtp`.
pub fn main(program: &str) -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let worker = oxipost_daemon::start(program);
    let lmtp = program == "lmtp" || worker.service.name == "lmtp";
    let s = match settings::Settings::from_config(&worker.config, lmtp) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let idle = if worker.max_idle.is_zero() {
        Duration::from_secs(100)
    } else {
        worker.max_idle
    };
    let mut agent = deliver::Agent::new(s);
    oxipost_daemon::single_server(worker, |_, client| service::serve(&mut agent, client, idle));
    ExitCode::SUCCESS
}
