//! oxipost's authentication service (Dovecot's auth process in the suite's shape): one
//! place where passwords are checked, asked by `smtpd` (and `pop3d`/`imapd`) over
//! `queue_directory/private/auth` with the protocol of [`oxipost_ipc::auth`].
//!
//! It owns the SASL server mechanisms ([`mech`]: `PLAIN`, `LOGIN`, `CRAM-MD5`,
//! `SCRAM-SHA-256`, and POP3 `APOP`), the password databases
//! ([`passdb`]: system users through `/etc/shadow` and the host's `crypt(3)`, Dovecot-style
//! passwd-files, SQLite virtual users, PostgreSQL users through [`pgsql`], MySQL/MariaDB
//! users through [`mysql`]), the password schemes ([`scheme`]) and the brute-force guard ([`guard`]: a growing delay per failure and client address, and a
//! failure limit per window). The protocol daemons never see a decoded credential; this
//! crate never logs one (user names are logged, passwords and SASL payloads never).
//!
//! Privileges: a `shadow` passdb needs root to read `/etc/shadow`, so the daemon then keeps
//! the privileges master started it with (master.cf `auth unix - n n - - auth`: not
//! unprivileged); with only `passwd-file:`, `sqlite:`, `pgsql:` and `mysql:` databases it
//! drops to `mail_owner` right after start.

pub mod crypt;
pub mod guard;
pub mod mech;
pub mod mysql;
pub mod passdb;
pub mod pgsql;
pub mod scheme;
pub mod server;
pub mod sqldb;
pub mod sqlite;
