//! Access tables (`check_*_access`): the lookup orders of Postfix's `check_access`,
//! `check_domain_access`, `check_addr_access`, `check_namadr_access` and
//! `check_mail_access`, and the table actions of `check_table_result`: `OK`/`RELAY`, an
//! all-numeric value (OK), `REJECT [text]`, `DEFER [text]`, `4xx`/`5xx text`, `DUNNO`,
//! `DEFER_IF_PERMIT`, `DEFER_IF_REJECT`, `WARN`, `INFO`, `HOLD`, `DISCARD`, `FILTER`,
//! `REDIRECT`, `PREPEND`, or a restriction list (a class name, `reject`, ...).
//!
//! A table that cannot answer stops the search: Postfix's
//! `451 4.3.5 <x>: ... rejected: Server configuration error`.

use oxipost_maps::MatchKind;

use super::{
    CLIENT, ErrClass, Eval, HELO, RECIPIENT, Stage, Status, TableRef, dsn_fix, dsn_split,
    valid_hostaddr,
};

/// What the table said when it failed.
const TABLE_ERROR: &str = "451 4.3.5 Server configuration error";

impl Eval<'_> {
    /// One key in one table list; `only` restricts partial keys to exact-key tables.
    fn table_find(&self, table: &str, key: &str, partial: bool) -> Result<Option<String>, ()> {
        match self.r.tables.get(table) {
            Some(TableRef::Open(maps)) => {
                let only = partial.then_some(MatchKind::Fixed);
                maps.lookup_kind(key, only).map_err(|e| {
                    oxipost_log::warning!("{table} lookup error for \"{}\": {e}", key);
                })
            }
            Some(TableRef::Broken(why)) => {
                oxipost_log::warning!("{table} lookup error for \"{key}\": {why}");
                Err(())
            }
            None => {
                oxipost_log::warning!("check_access: unexpected dictionary: {table}");
                Err(())
            }
        }
    }

    /// `check_access`: one key; returns the status and whether the key was found.
    pub(super) fn check_access(
        &mut self,
        table: &str,
        key: &str,
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
        _full: bool,
    ) -> (Status, bool) {
        match self.table_find(table, key, false) {
            Ok(Some(v)) => (
                self.table_result(table, &v, key, reply_name, reply_class, def_acl),
                true,
            ),
            Ok(None) => (Status::Dunno, false),
            Err(()) => (
                self.table_result(table, TABLE_ERROR, key, reply_name, reply_class, def_acl),
                true,
            ),
        }
    }

    /// `check_domain_access`: the name, then its parent domains (`example.com`, `com`,
    /// or `.example.com`, `.com` without parent-style matching).
    pub(super) fn check_domain_access(
        &mut self,
        table: &str,
        domain: &str,
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> (Status, bool) {
        let keys = if valid_hostaddr(domain) {
            vec![domain.to_string()]
        } else {
            domain_keys(domain, self.r.parent_style_access)
        };
        for (n, name) in keys.iter().enumerate() {
            match self.table_find(table, name, n > 0) {
                Ok(Some(v)) => {
                    return (
                        self.table_result(table, &v, domain, reply_name, reply_class, def_acl),
                        true,
                    );
                }
                Ok(None) => {}
                Err(()) => {
                    return (
                        self.table_result(
                            table,
                            TABLE_ERROR,
                            domain,
                            reply_name,
                            reply_class,
                            def_acl,
                        ),
                        true,
                    );
                }
            }
        }
        (Status::Dunno, false)
    }

    /// `check_addr_access`: the address, then its parent networks (`1.2.3`, `1.2`, `1`).
    pub(super) fn check_addr_access(
        &mut self,
        table: &str,
        address: &str,
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> (Status, bool) {
        let delim = if address.contains(':') { ':' } else { '.' };
        let mut key = address.to_string();
        let mut partial = false;
        loop {
            match self.table_find(table, &key, partial) {
                Ok(Some(v)) => {
                    return (
                        self.table_result(table, &v, address, reply_name, reply_class, def_acl),
                        true,
                    );
                }
                Ok(None) => {}
                Err(()) => {
                    return (
                        self.table_result(
                            table,
                            TABLE_ERROR,
                            address,
                            reply_name,
                            reply_class,
                            def_acl,
                        ),
                        true,
                    );
                }
            }
            match key.rfind(delim) {
                Some(i) => key.truncate(i),
                None => break,
            }
            if key.is_empty() {
                break;
            }
            partial = true;
        }
        (Status::Dunno, false)
    }

    /// `check_namadr_access`: the host name (and parents), then the address (and parents).
    pub(super) fn check_namadr_access(
        &mut self,
        table: &str,
        name: &str,
        addr: &str,
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> Status {
        let (st, found) = self.check_domain_access(table, name, reply_name, reply_class, def_acl);
        if st != Status::Dunno || found {
            return st;
        }
        let (st, _) = self.check_addr_access(table, addr, reply_name, reply_class, def_acl);
        st
    }

    /// `check_mail_access`: `user+ext@domain`, `user@domain`, `domain` and its parents,
    /// `user+ext@`, `user@` (partial keys only for exact-key tables).
    pub(super) fn check_mail_access(
        &mut self,
        table: &str,
        addr: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> Status {
        let res = self.r.resolve(addr);
        if !res.address.contains('@') {
            return Status::Dunno;
        }
        let full = res.address.clone();
        let delim = self.r.recipient_delimiter.clone();
        let (user, ext) = oxipost_maps::addr::split_extension(&res.local, &delim);
        let mut keys: Vec<(String, bool)> = vec![(full.clone(), false)];
        if ext.is_some() {
            keys.push((format!("{user}@{}", res.domain), true));
        }
        for d in domain_keys(&res.domain, self.r.parent_style_access) {
            keys.push((d, true));
        }
        keys.push((format!("{}@", res.local), true));
        if ext.is_some() {
            keys.push((format!("{user}@"), true));
        }
        keys.dedup();
        for (key, partial) in keys {
            match self.table_find(table, &key, partial) {
                Ok(Some(v)) => {
                    let st = self.table_result(table, &v, &full, addr, reply_class, def_acl);
                    // Source-routed recipients are too suspicious for OK.
                    let suspicious =
                        !self.r.allow_untrusted_routing && res.routed && reply_class == RECIPIENT;
                    return if st == Status::Ok && suspicious {
                        Status::Dunno
                    } else {
                        st
                    };
                }
                Ok(None) => {}
                Err(()) => {
                    return self.table_result(
                        table,
                        TABLE_ERROR,
                        &full,
                        addr,
                        reply_class,
                        def_acl,
                    );
                }
            }
        }
        Status::Dunno
    }

    /// Postfix's `check_table_result`: what a table value means.
    pub(super) fn table_result(
        &mut self,
        table: &str,
        value: &str,
        datum: &str,
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> Status {
        let value = value.trim();
        let (cmd, text) = match value.find([' ', '\t']) {
            Some(i) => (&value[..i], value[i..].trim_start()),
            None => (value, ""),
        };
        let upper = cmd.to_ascii_uppercase();
        let stage = self.cx.stage;
        match upper.as_str() {
            "DUNNO" => return Status::Dunno,
            "REJECT" => {
                let (dsn, t) = dsn_split("5.7.1", text);
                let code = self.r.codes.access_reject;
                return self.reject(
                    ErrClass::Policy,
                    code,
                    &dsn_fix(&dsn, reply_class),
                    format!(
                        "<{reply_name}>: {reply_class} rejected: {}",
                        if t.is_empty() { "Access denied" } else { &t }
                    ),
                );
            }
            "DEFER" => {
                let (dsn, t) = dsn_split("4.7.1", text);
                let code = self.r.codes.access_defer;
                return self.reject(
                    ErrClass::Policy,
                    code,
                    &dsn_fix(&dsn, reply_class),
                    format!(
                        "<{reply_name}>: {reply_class} rejected: {}",
                        if t.is_empty() { "Access denied" } else { &t }
                    ),
                );
            }
            "INFO" => {
                self.log_whatsup("info", text);
                return Status::Dunno;
            }
            "WARN" => {
                self.log_whatsup("warn", text);
                return Status::Dunno;
            }
            "FILTER" => {
                if !self.can_delegate(table, "FILTER") {
                    return Status::Dunno;
                }
                if text.is_empty() {
                    oxipost_log::warning!(
                        "access table {table} entry \"{datum}\" has FILTER entry without value"
                    );
                } else if !text.contains(':') {
                    oxipost_log::warning!(
                        "access table {table} entry \"{datum}\" requires transport:destination"
                    );
                } else {
                    self.log_whatsup(
                        "filter",
                        &format!("<{reply_name}>: {reply_class} triggers FILTER {text}"),
                    );
                    self.actions.filter = Some(text.to_string());
                }
                return Status::Dunno;
            }
            "HOLD" => {
                if !self.can_delegate(table, "HOLD") || self.actions.hold.is_some() {
                    return Status::Dunno;
                }
                let why = if text.is_empty() {
                    "triggers HOLD action"
                } else {
                    text
                };
                self.log_whatsup("hold", &format!("<{reply_name}>: {reply_class} {why}"));
                self.actions.hold = Some(why.to_string());
                return Status::Dunno;
            }
            "DISCARD" => {
                if !self.can_delegate(table, "DISCARD") {
                    return Status::Dunno;
                }
                let why = if text.is_empty() {
                    "triggers DISCARD action"
                } else {
                    text
                };
                self.log_whatsup("discard", &format!("<{reply_name}>: {reply_class} {why}"));
                self.actions.discard = Some(why.to_string());
                self.discard = true;
                return Status::Ok;
            }
            "REDIRECT" => {
                if !self.can_delegate(table, "REDIRECT") {
                    return Status::Dunno;
                }
                if !text.contains('@') {
                    oxipost_log::warning!(
                        "access table {table} entry \"{datum}\" requires user@domain target"
                    );
                } else {
                    self.log_whatsup(
                        "redirect",
                        &format!("<{reply_name}>: {reply_class} triggers REDIRECT {text}"),
                    );
                    self.actions.redirect = Some(text.to_string());
                }
                return Status::Dunno;
            }
            "DEFER_IF_PERMIT" => {
                let (dsn, t) = dsn_split("4.7.1", text);
                let code = self.r.codes.access_defer;
                return self.defer_if_permit(
                    true,
                    code,
                    &dsn_fix(&dsn, reply_class),
                    format!(
                        "<{reply_name}>: {reply_class} rejected: {}",
                        if t.is_empty() {
                            "Service unavailable"
                        } else {
                            &t
                        }
                    ),
                );
            }
            "DEFER_IF_REJECT" => {
                let (dsn, t) = dsn_split("4.7.1", text);
                let code = self.r.codes.access_defer;
                Self::defer_if(
                    &mut self.defer_if_reject,
                    ErrClass::Policy,
                    code,
                    &dsn_fix(&dsn, reply_class),
                    format!(
                        "<{reply_name}>: {reply_class} rejected: {}",
                        if t.is_empty() {
                            "Service unavailable"
                        } else {
                            &t
                        }
                    ),
                );
                return Status::Dunno;
            }
            "PREPEND" => {
                if self.cx.sender.is_none() {
                    oxipost_log::warning!(
                        "access table {table}: with smtpd_delay_reject=no, action PREPEND is always skipped in Client host or Helo command restrictions"
                    );
                    return Status::Dunno;
                }
                if stage == Some(Stage::Eod) {
                    oxipost_log::warning!(
                        "access table {table}: action PREPEND must be used before smtpd_end_of_data_restrictions"
                    );
                    return Status::Dunno;
                }
                if !is_header(text) {
                    oxipost_log::warning!(
                        "access table {table} entry \"{datum}\" requires header: text"
                    );
                } else {
                    self.actions.prepend.push(text.to_string());
                }
                return Status::Dunno;
            }
            "OK" | "RELAY" => return Status::Ok,
            _ => {}
        }
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            return Status::Ok;
        }
        let b = cmd.as_bytes();
        if cmd.len() == 3
            && !text.is_empty()
            && (b[0] == b'4' || b[0] == b'5')
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit()
        {
            let code: u16 = cmd.parse().unwrap_or(451);
            let default = if b[0] == b'4' { "4.7.1" } else { "5.7.1" };
            let (dsn, t) = dsn_split(default, text);
            return self.reject(
                ErrClass::Policy,
                code,
                &dsn_fix(&dsn, reply_class),
                format!(
                    "<{reply_name}>: {reply_class} rejected: {}",
                    if t.is_empty() { "Access denied" } else { &t }
                ),
            );
        }
        if value.contains(':') {
            oxipost_log::warning!("access table {table} has entry with lookup table: {value}");
            oxipost_log::warning!("do not specify lookup tables inside SMTPD access maps");
            oxipost_log::warning!("define a restriction class and specify its name instead.");
            return self.server_error();
        }
        if self.recursion > 100 {
            oxipost_log::warning!(
                "access table {table} entry {value} causes unreasonable recursion"
            );
            return self.server_error();
        }
        let list = super::split(value);
        if list.is_empty() {
            oxipost_log::warning!("access table {table} entry {value} has empty value");
            return Status::Ok;
        }
        self.generic(&list, reply_name, reply_class, def_acl)
    }

    /// HOLD, DISCARD, FILTER and REDIRECT concern a message: not with
    /// `smtpd_delay_reject = no` in client or HELO restrictions.
    fn can_delegate(&self, table: &str, action: &str) -> bool {
        if self.cx.sender.is_none() {
            oxipost_log::warning!(
                "access table {table}: with smtpd_delay_reject=no, action {action} is always skipped in {CLIENT} or {HELO} restrictions"
            );
            return false;
        }
        true
    }
}

/// `name: value` with a valid header name.
fn is_header(text: &str) -> bool {
    match text.split_once(':') {
        Some((name, _)) => {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        }
        None => false,
    }
}

/// A domain and its parents: `a.example.com`, `example.com`, `com` (parent style) or
/// `a.example.com`, `.example.com`, `.com`.
fn domain_keys(domain: &str, parent_style: bool) -> Vec<String> {
    let mut out = Vec::new();
    if domain.is_empty() {
        return out;
    }
    out.push(domain.to_string());
    let mut rest = domain;
    while let Some(i) = rest.find('.') {
        let parent = &rest[i + 1..];
        if parent.is_empty() {
            break;
        }
        out.push(if parent_style {
            parent.to_string()
        } else {
            format!(".{parent}")
        });
        rest = parent;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::domain_keys;

    #[test]
    fn parents() {
        assert_eq!(
            domain_keys("a.example.com", true),
            ["a.example.com", "example.com", "com"]
        );
        assert_eq!(
            domain_keys("a.example.com", false),
            ["a.example.com", ".example.com", ".com"]
        );
    }
}
