//! Typed configuration handed to a [`Session`](crate::Session).
//!
//! The daemon resolves main.cf once and fills these structs; this crate never
//! reads configuration itself. Defaults follow Postfix's `postconf -d`.

/// How bare `<LF>` (an LF not preceded by CR) is treated, as Postfix's
/// `smtpd_forbid_bare_newline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// Accept it. In DATA the LF is passed through as content; it never
    /// starts a line for dot handling, so it can never end the message.
    #[default]
    No,
    /// Accept it; in DATA it is rewritten to `<CR><LF>` (still never a line
    /// start for end-of-data purposes).
    Normalize,
    /// Reply `<code> 5.5.2 <host> Error: bare <LF> received` and close.
    Reject,
}

/// Size and count limits. Every buffer in the session is bounded by these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line, without CRLF (`line_length_limit`, 2048).
    pub line_length_limit: usize,
    /// Largest message in bytes; 0 means unlimited (`message_size_limit`).
    pub message_size_limit: u64,
    /// Accepted recipients per transaction (`smtpd_recipient_limit`).
    pub recipient_limit: usize,
    /// Over-limit RCPTs answered 452 before they start counting as errors
    /// (`smtpd_recipient_overshoot_limit`).
    pub recipient_overshoot_limit: usize,
    /// Errors after which the driver should delay replies
    /// (`smtpd_soft_error_limit`); see [`Session::error_sleep_due`](crate::Session::error_sleep_due).
    pub soft_error_limit: u32,
    /// Errors after which the session says 421 and closes
    /// (`smtpd_hard_error_limit`).
    pub hard_error_limit: u32,
    /// Size of the content chunks handed to the driver in
    /// [`Event::MessageData`](crate::Event::MessageData).
    pub data_chunk_size: usize,
    /// Unprocessed input above which [`Session::wants_read`](crate::Session::wants_read)
    /// turns false (back-pressure while a decision is pending).
    pub input_buffer_limit: usize,
    /// Longest SASL response line (GSSAPI tokens exceed 2048).
    pub sasl_line_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line_length_limit: 2048,
            message_size_limit: 10_240_000,
            recipient_limit: 1000,
            recipient_overshoot_limit: 1000,
            soft_error_limit: 10,
            hard_error_limit: 20,
            data_chunk_size: 64 * 1024,
            input_buffer_limit: 256 * 1024,
            sasl_line_limit: 12 * 1024,
        }
    }
}

/// ESMTP extensions, each switchable (Postfix's `smtpd_discard_ehlo_keywords`).
/// A disabled extension is neither advertised nor accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    pub size: bool,
    pub enhanced_status_codes: bool,
    pub eightbitmime: bool,
    pub dsn: bool,
    pub smtputf8: bool,
    pub chunking: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            pipelining: true,
            size: true,
            enhanced_status_codes: true,
            eightbitmime: true,
            dsn: true,
            smtputf8: true,
            chunking: true,
        }
    }
}

/// Everything a [`Session`](crate::Session) needs to know about its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `myhostname`: used in EHLO/HELO replies and 421/521 texts.
    pub hostname: String,
    /// Greeting text after `220 ` (`smtpd_banner`, default `<host> ESMTP`).
    pub banner: String,
    pub limits: Limits,
    pub extensions: Extensions,
    /// `!disable_vrfy_command`: advertise and accept VRFY.
    pub vrfy_enabled: bool,
    /// Offer STARTTLS (the driver has a certificate).
    pub starttls: bool,
    /// SASL mechanisms to advertise; empty disables AUTH.
    pub auth_mechanisms: Vec<String>,
    /// `smtpd_tls_auth_only`: offer AUTH only inside TLS.
    pub auth_only_with_tls: bool,
    /// `smtpd_helo_required`.
    pub helo_required: bool,
    /// `strict_rfc821_envelopes`: require `<...>` around addresses.
    pub strict_rfc821_envelopes: bool,
    /// `smtpd_forbid_bare_newline`.
    pub bare_newline: BareNewline,
    /// Reply code used when [`BareNewline::Reject`] fires.
    pub bare_newline_reject_code: u16,
    /// `smtpd_forbid_unauth_pipelining`: input sent before the greeting, or
    /// after a command that must end a pipelined group, gets
    /// `554 5.5.0 Error: SMTP protocol synchronization` and the session closes.
    pub forbid_unauth_pipelining: bool,
    /// The connection is already TLS (port 465 wrapper mode).
    pub tls_active: bool,
    /// Unrecognized commands become [`Event::Unknown`](crate::Event::Unknown) decisions
    /// (smtpd with milters, which see them) instead of an immediate `502`.
    pub unknown_command_events: bool,
}

impl ServerConfig {
    /// A configuration with Postfix defaults for `hostname`.
    pub fn new(hostname: impl Into<String>) -> Self {
        let hostname = hostname.into();
        ServerConfig {
            banner: format!("{hostname} ESMTP"),
            hostname,
            limits: Limits::default(),
            extensions: Extensions::default(),
            vrfy_enabled: true,
            starttls: false,
            auth_mechanisms: Vec::new(),
            auth_only_with_tls: false,
            helo_required: false,
            strict_rfc821_envelopes: false,
            bare_newline: BareNewline::No,
            bare_newline_reject_code: 521,
            forbid_unauth_pipelining: true,
            tls_active: false,
            unknown_command_events: false,
        }
    }
}
