//! What [`Session::next`](crate::Session::next) hands to the driver.

use crate::address::Address;

/// One unit of work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes to write to the client, in order. Replies to pipelined commands
    /// are batched into one `Output`.
    Output(Vec<u8>),
    /// Something the driver must act on; see [`Event`] for which ones need a
    /// decision.
    Event(Event),
    /// Nothing to do until more input is fed or a pending decision is given.
    NeedInput,
    /// All output has been returned; close the connection.
    Close,
}

/// Events. Those marked *decision* block the session until the driver calls
/// [`accept`](crate::Session::accept), [`accept_with`](crate::Session::accept_with)
/// or [`reject`](crate::Session::reject) (or, for AUTH,
/// [`auth_challenge`](crate::Session::auth_challenge)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// *Decision.* HELO (`extended == false`) or EHLO. Accepting resets any
    /// transaction and sends the greeting / extension list.
    Helo { name: String, extended: bool },
    /// *Decision.* A syntactically valid MAIL FROM in the right state.
    Mail(MailFrom),
    /// *Decision.* A syntactically valid RCPT TO below the recipient limit.
    Rcpt(RcptTo),
    /// *Decision.* DATA with at least one accepted recipient; accepting
    /// sends 354.
    Data,
    /// Message content (dot-unstuffed for DATA, raw for BDAT), at most
    /// `data_chunk_size` bytes. Never sent once the size limit is exceeded.
    MessageData(Vec<u8>),
    /// *Decision.* End of message (`.` or `BDAT ... LAST`); `size` is the
    /// content size in bytes. Accept with e.g. `accept_with("Ok: queued as X")`.
    /// Either way the transaction is over afterwards.
    MessageEnd { size: u64 },
    /// The current transaction is gone (RSET, HELO/EHLO, size limit, bare
    /// LF rejection, ...): discard anything kept for it.
    Reset,
    /// *Decision.* VRFY with its argument as sent.
    Vrfy(String),
    /// Output up to `220 2.0.0 Ready to start TLS` has been returned: start
    /// the TLS handshake now, then call
    /// [`tls_established`](crate::Session::tls_established).
    StartTls,
    /// *Decision.* AUTH with a mechanism from the configured list, and the
    /// initial response (base64 text as sent; `=` means empty) if any.
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
    /// *Decision.* A client SASL response line (base64 text) after a
    /// challenge.
    AuthResponse(String),
    /// The client cancelled the SASL exchange with `*`; the core replied 501.
    AuthAborted,
    /// *Decision.* An unrecognized command line, as sent (only with
    /// `unknown_command_events`). Accepting answers Postfix's `502 5.5.2 Error: command
    /// not recognized`; a reject gives its own reply.
    Unknown(String),
}

/// MAIL FROM and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// `None` is the null sender `<>`.
    pub sender: Option<Address>,
    /// `SIZE=` as declared.
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    /// DSN `RET=`.
    pub ret: Option<Ret>,
    /// DSN `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` as sent (RFC 4954), unchecked.
    pub auth: Option<String>,
}

/// RCPT TO and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    pub recipient: Address,
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

/// MAIL `BODY=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
    /// Only with CHUNKING; the content must then come with BDAT.
    BinaryMime,
}

/// DSN `RET=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// DSN `NOTIFY=`; all false means `NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// DSN `ORCPT=addr-type;address`, address xtext-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    pub addr_type: String,
    pub address: String,
}
