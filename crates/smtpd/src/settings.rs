//! Everything smtpd takes from main.cf (with master.cf `-o` overrides), resolved once at
//! start into typed values. Nothing is looked up by name per session or per message.

use std::path::PathBuf;
use std::time::Duration;

use oxipost_config::Config;
use oxipost_queue::QueueConfig;
use oxipost_smtp_proto::{BareNewline, ServerConfig};

use std::sync::Arc;

use crate::restrict::Restrictions;

/// smtpd's typed configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The protocol core's configuration (banner, limits, extensions, ...).
    pub server: ServerConfig,
    pub myhostname: String,
    /// The master.cf service name (`smtp`, `submission`, ...), for log lines.
    pub service_name: String,
    /// `mail_name`, shown in the `Received:` header.
    pub mail_name: String,
    /// `smtpd_timeout`.
    pub timeout: Duration,
    /// `queue_directory` and its hashing.
    pub queue: QueueConfig,
    /// `queue_directory/public/qmgr`: where new mail is announced.
    pub qmgr_trigger: PathBuf,
    /// The restriction lists, tables, `mynetworks` and address classes
    /// ([`crate::restrict`]), shared with helper threads.
    pub restrictions: Arc<Restrictions>,
    /// `smtpd_peername_lookup`: look the client's name up in the DNS (PTR and forward
    /// confirmation) before the greeting.
    pub peername_lookup: bool,
    /// `smtpd_client_connection_count_limit` (0: none).
    pub connection_limit: usize,
    /// `header_size_limit`.
    pub header_size_limit: usize,
    /// Set when the configuration asks for something smtpd cannot do (required TLS without
    /// a certificate, restriction lists without a relay guard). smtpd then fails closed:
    /// every client gets `421 4.3.5 Server configuration error` and nothing is accepted,
    /// rather than accepting mail the configuration meant to refuse.
    pub unsupported: Option<String>,
    /// TLS and SASL (see [`crate::sasl`]).
    pub tls: TlsSettings,
    pub sasl: SaslSettings,
    /// `smtpd_milters` and the `milter_*` parameters ([`crate::milter`]).
    pub milters: Arc<oxipost_milter::MilterSettings>,
    /// `milter_header_checks` (`oxipost_cleanup::checks::check_milter_headers`).
    pub milter_header_checks: Arc<oxipost_cleanup::checks::Checks>,
    /// `notify_classes` session transcripts ([`crate::notice`]).
    pub notices: crate::notice::NoticeSettings,
}

/// `smtpd_tls_*`, resolved.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// STARTTLS offered (`may`/`encrypt`) or implicit TLS (`smtpd_tls_wrappermode`).
    pub enabled: bool,
    /// `encrypt` (or wrapper mode): nothing but EHLO/HELO/STARTTLS/NOOP/QUIT before TLS.
    pub required: bool,
    /// `smtpd_tls_wrappermode`.
    pub wrapper: bool,
    /// Key and certificate files and the protocol list in force.
    pub files: oxipost_tls::TlsFiles,
    /// `smtpd_tls_received_header`.
    pub received_header: bool,
    /// Why required TLS cannot work (no certificate): smtpd then fails closed.
    pub problem: Option<String>,
}

/// `smtpd_sasl_*` and the restriction entries that depend on authentication.
#[derive(Debug, Clone, Default)]
pub struct SaslSettings {
    /// `smtpd_sasl_auth_enable`.
    pub enabled: bool,
    /// The authentication service socket (`queue_directory/$smtpd_sasl_path`).
    pub socket: PathBuf,
    /// `smtpd_sasl_security_options` (lower-cased words).
    pub security_options: Vec<String>,
    /// `smtpd_sasl_tls_security_options`.
    pub tls_security_options: Vec<String>,
    /// `smtpd_sasl_authenticated_header`.
    pub authenticated_header: bool,
}

fn err(name: &str, e: impl std::fmt::Display) -> String {
    format!("parameter {name}: {e}")
}

fn usize_of(cfg: &Config, name: &str) -> Result<usize, String> {
    let v = cfg.get_int(name).map_err(|e| err(name, e))?;
    usize::try_from(v.max(0)).map_err(|e| err(name, e))
}

impl Settings {
    /// Reads every parameter smtpd uses; an invalid value is an error naming it.
    pub fn from_config(cfg: &Config) -> Result<Settings, String> {
        let get = |n: &str| cfg.get(n).map_err(|e| err(n, e));
        let myhostname = get("myhostname")?.trim().to_owned();
        let mut server = ServerConfig::new(myhostname.clone());
        server.banner = get("smtpd_banner")?.trim().to_owned();
        let limits = &mut server.limits;
        limits.message_size_limit = cfg
            .get_size("message_size_limit")
            .map_err(|e| err("message_size_limit", e))?;
        limits.recipient_limit = usize_of(cfg, "smtpd_recipient_limit")?.max(1);
        limits.soft_error_limit =
            u32::try_from(usize_of(cfg, "smtpd_soft_error_limit")?).unwrap_or(u32::MAX);
        limits.hard_error_limit = u32::try_from(usize_of(cfg, "smtpd_hard_error_limit")?)
            .unwrap_or(u32::MAX)
            .max(1);
        limits.line_length_limit = usize_of(cfg, "line_length_limit")?.max(512);
        server.vrfy_enabled = !cfg
            .get_bool("disable_vrfy_command")
            .map_err(|e| err("disable_vrfy_command", e))?;
        server.extensions.smtputf8 = cfg
            .get_bool("smtputf8_enable")
            .map_err(|e| err("smtputf8_enable", e))?;
        server.helo_required = cfg
            .get_bool("smtpd_helo_required")
            .map_err(|e| err("smtpd_helo_required", e))?;
        server.strict_rfc821_envelopes = cfg
            .get_bool("strict_rfc821_envelopes")
            .map_err(|e| err("strict_rfc821_envelopes", e))?;
        server.forbid_unauth_pipelining = cfg
            .get_bool("smtpd_forbid_unauth_pipelining")
            .map_err(|e| err("smtpd_forbid_unauth_pipelining", e))?;
        server.bare_newline = match get("smtpd_forbid_bare_newline")?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "no" => BareNewline::No,
            "normalize" | "yes" => BareNewline::Normalize,
            "reject" => BareNewline::Reject,
            other => {
                return Err(err(
                    "smtpd_forbid_bare_newline",
                    format!("bad value {other:?}"),
                ));
            }
        };
        for kw in cfg
            .get_list("smtpd_discard_ehlo_keywords")
            .map_err(|e| err("smtpd_discard_ehlo_keywords", e))?
        {
            let ext = &mut server.extensions;
            match kw.to_ascii_lowercase().as_str() {
                "pipelining" => ext.pipelining = false,
                "size" => ext.size = false,
                "enhancedstatuscodes" => ext.enhanced_status_codes = false,
                "8bitmime" => ext.eightbitmime = false,
                "dsn" => ext.dsn = false,
                "smtputf8" => ext.smtputf8 = false,
                "chunking" => ext.chunking = false,
                "vrfy" => server.vrfy_enabled = false,
                // silent-discard and keywords we never announce (etrn, xclient, ...).
                _ => {}
            }
        }
        let queue_directory = PathBuf::from(get("queue_directory")?.trim());
        let depth = u32::try_from(usize_of(cfg, "hash_queue_depth")?.max(1)).unwrap_or(1);
        let queue = QueueConfig::new(&queue_directory)
            .with_hash_queue_names(&get("hash_queue_names")?)
            .with_hash_queue_depth(depth);
        let (restrictions, unsupported) = match Restrictions::from_config(cfg) {
            Ok(r) => (r, None),
            Err(e) => (Restrictions::default(), Some(e)),
        };
        for name in &restrictions.unknown_names {
            oxipost_log::warning!("unknown smtpd restriction: \"{name}\"");
        }
        let tls = tls_settings(cfg)?;
        let lower = |v: Vec<String>| v.into_iter().map(|r| r.to_ascii_lowercase()).collect();
        let sasl = SaslSettings {
            enabled: cfg
                .get_bool("smtpd_sasl_auth_enable")
                .map_err(|e| err("smtpd_sasl_auth_enable", e))?,
            socket: queue_directory.join(get("smtpd_sasl_path")?.trim()),
            security_options: lower(
                cfg.get_list("smtpd_sasl_security_options")
                    .map_err(|e| err("smtpd_sasl_security_options", e))?,
            ),
            tls_security_options: lower(
                cfg.get_list("smtpd_sasl_tls_security_options")
                    .map_err(|e| err("smtpd_sasl_tls_security_options", e))?,
            ),
            authenticated_header: cfg
                .get_bool("smtpd_sasl_authenticated_header")
                .map_err(|e| err("smtpd_sasl_authenticated_header", e))?,
        };
        server.starttls = tls.enabled && !tls.wrapper;
        server.tls_active = tls.wrapper;
        server.auth_only_with_tls = cfg
            .get_bool("smtpd_tls_auth_only")
            .map_err(|e| err("smtpd_tls_auth_only", e))?
            || tls.required;
        Ok(Settings {
            milters: crate::milter::settings(cfg)?,
            milter_header_checks: Arc::new(oxipost_cleanup::checks::milter_header_checks(cfg)?),
            notices: crate::notice::settings(cfg)?,
            tls,
            sasl,
            restrictions: Arc::new(restrictions),
            peername_lookup: cfg
                .raw("smtpd_peername_lookup")
                .is_none_or(|v| !v.trim().eq_ignore_ascii_case("no")),
            unsupported,
            server,
            mail_name: get("mail_name")?.trim().to_owned(),
            service_name: get("service_name")?.trim().to_owned(),
            timeout: cfg
                .get_time("smtpd_timeout")
                .map_err(|e| err("smtpd_timeout", e))?
                .max(Duration::from_secs(1)),
            qmgr_trigger: queue_directory.join("public").join("qmgr"),
            queue,
            connection_limit: usize_of(cfg, "smtpd_client_connection_count_limit")?,
            header_size_limit: usize_of(cfg, "header_size_limit")?,
            myhostname,
        })
    }
}

/// `smtpd_tls_security_level` (`none`/empty, `may`, `encrypt`), the wrapper mode and the
/// certificate files. A level that needs TLS without a certificate is an error.
fn tls_settings(cfg: &Config) -> Result<TlsSettings, String> {
    let get = |n: &str| cfg.get(n).map_err(|e| err(n, e));
    let bool_of = |n: &str| cfg.get_bool(n).map_err(|e| err(n, e));
    let wrapper = bool_of("smtpd_tls_wrappermode")?;
    let level = get("smtpd_tls_security_level")?.trim().to_ascii_lowercase();
    let (enabled, required) = match level.as_str() {
        "" | "none" => (wrapper, wrapper),
        "may" => (true, wrapper),
        "encrypt" => (true, true),
        other => {
            return Err(err(
                "smtpd_tls_security_level",
                format!("bad value {other:?} (none, may or encrypt)"),
            ));
        }
    };
    let path = |n: &str| -> Result<Option<PathBuf>, String> {
        let v = get(n)?;
        let v = v.trim();
        Ok((!v.is_empty()).then(|| PathBuf::from(v)))
    };
    let protocols = if required {
        "smtpd_tls_mandatory_protocols"
    } else {
        "smtpd_tls_protocols"
    };
    let files = oxipost_tls::TlsFiles {
        cert_file: path("smtpd_tls_cert_file")?,
        key_file: path("smtpd_tls_key_file")?,
        chain_files: cfg
            .get_list("smtpd_tls_chain_files")
            .map_err(|e| err("smtpd_tls_chain_files", e))?
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        protocols: cfg
            .get_list(protocols)
            .map_err(|e| err(protocols, e))?
            .join(" "),
    };
    // Without a certificate, opportunistic TLS is simply not offered; required TLS makes
    // smtpd fail closed (crate::main), as it does when the files cannot be loaded.
    let mut problem = None;
    let mut enabled = enabled;
    if enabled && files.is_empty() {
        if required {
            problem = Some(format!(
                "TLS is required ({}) but neither smtpd_tls_cert_file nor smtpd_tls_chain_files is set",
                if wrapper {
                    "smtpd_tls_wrappermode = yes"
                } else {
                    "smtpd_tls_security_level = encrypt"
                }
            ));
        } else {
            enabled = false;
        }
    }
    Ok(TlsSettings {
        problem,
        enabled,
        required,
        wrapper,
        files,
        received_header: bool_of("smtpd_tls_received_header")?,
    })
}
