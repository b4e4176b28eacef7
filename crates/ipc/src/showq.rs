//! The `showq` protocol: `postqueue` (any local user) -> the `showq` service on
//! `public/showq` (runs as `mail_owner`, may read and rename queue files).
//!
//! The server speaks first with [`Hello`](crate::Hello) (`showq`, version 1); the client
//! sends one [`ShowqRequest`]; the server answers a listing with one [`ShowqReply::Message`]
//! frame per queued message followed by [`ShowqReply::End`], and any other request with one
//! [`ShowqReply::Done`]. The fields of a message are Postfix 3.1's `postqueue -j` fields, so
//! the client prints them without further lookups.

use serde::{Deserialize, Serialize};

/// Protocol name in the server's hello.
pub const SHOWQ_PROTOCOL: &str = "showq";
/// Protocol version.
pub const SHOWQ_VERSION: u32 = 1;

/// What the client wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowqRequest {
    /// List every message of the incoming, active, deferred, hold and maildrop queues.
    List,
    /// Schedule one deferred message for immediate delivery (`postqueue -i`).
    Deliver { queue_id: String },
    /// Schedule every deferred message with a recipient in `site` (`postqueue -s`).
    DeliverSite { site: String },
}

/// One recipient that still awaits delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowqRecipient {
    pub address: String,
    /// Why delivery is delayed, when known (empty otherwise).
    #[serde(default)]
    pub delay_reason: String,
}

/// One queued message, as Postfix 3.1's `postqueue -j` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowqMessage {
    pub queue_name: String,
    pub queue_id: String,
    /// Seconds since the epoch.
    pub arrival_time: u64,
    /// Content size in bytes.
    pub message_size: u64,
    #[serde(default)]
    pub forced_expire: bool,
    /// The envelope sender (`MAILER-DAEMON` for the null sender).
    pub sender: String,
    pub recipients: Vec<ShowqRecipient>,
    /// For a maildrop file that cannot be read: the uid of its owner.
    #[serde(default)]
    pub sender_uid: Option<u32>,
}

/// The server's frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowqReply {
    Message(ShowqMessage),
    /// End of a listing.
    End,
    /// The outcome of a non-listing request: `ok` and a text for the person.
    Done {
        ok: bool,
        text: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{read_frame, write_frame};

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        let m = ShowqReply::Message(ShowqMessage {
            queue_name: "deferred".into(),
            queue_id: "4Q3xTj6bKzz9sSZ".into(),
            arrival_time: 1,
            message_size: 2,
            forced_expire: false,
            sender: "a@b".into(),
            recipients: vec![ShowqRecipient {
                address: "c@d".into(),
                delay_reason: "x".into(),
            }],
            sender_uid: None,
        });
        write_frame(&mut buf, &m).expect("write");
        write_frame(
            &mut buf,
            &ShowqRequest::Deliver {
                queue_id: "X".into(),
            },
        )
        .expect("write");
        let mut r = &buf[..];
        let back: ShowqReply = read_frame(&mut r).expect("read").expect("frame");
        assert_eq!(back, m);
        let req: ShowqRequest = read_frame(&mut r).expect("read").expect("frame");
        assert_eq!(
            req,
            ShowqRequest::Deliver {
                queue_id: "X".into()
            }
        );
    }
}
