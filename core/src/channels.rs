//! Channels (SPEC §7, §12): a record per channel, its read grants, and its messages — on Redis a
//! stream per channel (bounded), which is the truth; pub/sub is only a doorbell.
//!
//! ```text
//!  publish ─► [channel live?] ─► XADD (trimmed to the retention cap) ─► doorbell on the
//!             channel's hub topic: `m<pos>\n<prev>\n<expires>\n<payload>\n<metadata>`
//!                                     (too large: `n<pos>\n<prev>`, read it from the stream)
//!  subscriber: cursor = the last position sent; a doorbell whose `prev` is the cursor is the
//!              next message; an older one is skipped; anything else (or a Gap) re-reads the
//!              stream after the cursor.
//!  delete ─► tombstone + messages and grants gone + `x` on the topic (streams end)
//!  revoke ─► grant marked revoked + `r<grant>` on the topic (its streams end)
//! ```
//!
//! A message's id is a UUIDv7 derived from its stream position (the entry id `<ms>-<seq>`), so
//! any id a client holds is a position in its channel: [`message_id`] and [`position_of`].

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::Topic;
use crate::store::StoreError;

/// Longest channel name (SPEC §7.3).
pub const MAX_NAME: usize = 128;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest grant label.
pub const MAX_LABEL: usize = 128;
/// Live channels an owner (a tenant, or "no tenant") may hold at once.
pub const MAX_CHANNELS_PER_OWNER: usize = 10_000;
/// Read grants a channel may hold (revoked and expired ones are forgotten to make room).
pub const MAX_GRANTS_PER_CHANNEL: usize = 1_000;
/// How long a deleted channel's tombstone answers 404 before it is forgotten.
pub const TOMBSTONE_TTL_SECS: u64 = 7 * 24 * 3600;
/// Doorbells carry the message itself up to this size (payload + metadata); a larger one rings
/// without it and subscribers read it from the stream.
pub const SIGNAL_DATA_MAX: usize = 64 * 1024;
/// Most messages one read returns.
pub const MAX_PAGE: usize = 1_000;

/// Whether `id` can be a channel id (ids this server hands out are UUIDs). Anything else is an
/// unknown channel and never reaches a key or topic name.
pub fn valid_channel_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Whether `id` can be a grant id (UUIDs, like channels).
pub fn valid_grant_id(id: &str) -> bool {
    valid_channel_id(id)
}

/// A channel's visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone with the id reads it.
    Public,
    /// Reads need a read grant's token.
    Private,
}

impl Visibility {
    /// `public` or `private`.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

/// What a channel was created with. Written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDoc {
    /// Its id (a UUID).
    pub id: String,
    /// Its name (not unique).
    pub name: String,
    /// Public or private.
    pub visibility: Visibility,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
    /// The TTL of messages published without one (`None`: kept until trimmed).
    #[serde(default)]
    pub default_ttl_seconds: Option<u64>,
    /// Unix ms of its creation.
    pub created_ms: u64,
    /// The tenant it belongs to (`None`: none).
    #[serde(default)]
    pub tenant: Option<String>,
    /// SHA-256 (hex) of its publish token.
    pub publish_token_hash: String,
}

/// A channel as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// What it was created with.
    pub doc: ChannelDoc,
    /// Soft-deleted: reads stop, streams end, it answers 404.
    pub deleted: bool,
    /// The position of its last message (`None`: nothing published yet).
    pub last: Option<Position>,
}

/// A read grant of a private channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Its id (a UUID).
    pub id: String,
    /// The channel it reads.
    pub channel_id: String,
    /// A label.
    #[serde(default)]
    pub label: Option<String>,
    /// Unix ms when it stops working (`None`: never).
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// Unix ms of its creation.
    pub created_ms: u64,
    /// Unix ms of its revocation.
    #[serde(default)]
    pub revoked_ms: Option<u64>,
    /// SHA-256 (hex) of its token.
    pub token_hash: String,
}

impl Grant {
    /// Whether it lets a reader in at `now_ms`.
    pub fn valid_at(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// A position in a channel's stream: the stream entry id `<ms>-<seq>`. Ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Unix ms of the publish.
    pub ms: u64,
    /// Its sequence within that millisecond.
    pub seq: u64,
}

impl Position {
    /// Reads `<ms>-<seq>`.
    pub fn parse(text: &str) -> Option<Position> {
        let (ms, seq) = text.split_once('-')?;
        Some(Position {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// 74 bits derived from the channel id (FNV-1a), mixed into its message ids so that the same
/// position in two channels never makes the same id.
fn channel_mask(channel: &str) -> u128 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut h2: u64 = 0x8422_2325_cbf2_9ce4;
    for b in channel.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        h2 = (h2 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (u128::from(h2 & 0x3ff) << 64) | u128::from(h)
}

const RAND_B_BITS: u32 = 62;
const RAND_B_MASK: u128 = (1 << RAND_B_BITS) - 1;

/// The UUIDv7 of the message at `pos` in `channel`: the 48-bit timestamp is the position's
/// milliseconds; the 74 random bits hold its sequence mixed with the channel.
pub fn message_id(channel: &str, pos: Position) -> String {
    let r = u128::from(pos.seq) ^ channel_mask(channel);
    let rand_a = (r >> RAND_B_BITS) & 0xfff;
    let rand_b = r & RAND_B_MASK;
    let bits = (u128::from(pos.ms & 0xffff_ffff_ffff) << 80)
        | (0x7 << 76)
        | (rand_a << 64)
        | (0b10 << 62)
        | rand_b;
    uuid::Uuid::from_u128(bits).hyphenated().to_string()
}

/// The position a message id of `channel` names (`None`: not an id of this channel's scheme).
pub fn position_of(channel: &str, id: &str) -> Option<Position> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let bits = uuid.as_u128();
    if (bits >> 62) & 0b11 != 0b10 {
        return None;
    }
    let ms = (bits >> 80) as u64;
    let rand_a = (bits >> 64) & 0xfff;
    let r = (rand_a << RAND_B_BITS) | (bits & RAND_B_MASK);
    let seq = r ^ channel_mask(channel);
    Some(Position {
        ms,
        seq: u64::try_from(seq).ok()?,
    })
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its position (its id derives from it).
    pub pos: Position,
    /// The payload, as compact JSON text.
    pub payload: String,
    /// The metadata, as compact JSON text (empty: none).
    pub metadata: String,
    /// Unix ms after which it is never delivered (0: no TTL).
    pub expires_ms: u64,
}

impl StoredMessage {
    /// Whether it may still be delivered at `now_ms`.
    pub fn live_at(&self, now_ms: u64) -> bool {
        self.expires_ms == 0 || now_ms < self.expires_ms
    }
}

/// What a read of a channel's messages found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessagesRead {
    /// Whether the channel exists and is not deleted.
    pub exists: bool,
    /// The retained messages after the requested position, oldest first, at most the limit
    /// (expired ones included: the reader filters them, as TTLs apply at delivery).
    pub messages: Vec<StoredMessage>,
    /// Whether more follow.
    pub has_more: bool,
    /// Whether the requested position is a retained message.
    pub after_retained: bool,
    /// The oldest retained message's position.
    pub first: Option<Position>,
}

/// What a channel's hub topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSignal {
    /// A message was published; `prev` is the position of the one before it.
    Message {
        /// The message before it (`None`: it is the channel's first).
        prev: Option<Position>,
        /// The message.
        message: StoredMessage,
    },
    /// A message too large to ring with its data was published: read it from the stream.
    Published {
        /// The message before it.
        prev: Option<Position>,
        /// Its position.
        pos: Position,
    },
    /// The channel was deleted: every stream ends.
    Deleted,
    /// A grant was revoked: its streams end.
    Revoked(String),
}

fn prev_text(prev: Option<Position>) -> String {
    prev.map_or_else(|| "-".to_string(), |p| p.to_string())
}

impl ChannelSignal {
    /// The wire form (see the module doc).
    pub fn encode(&self) -> Bytes {
        match self {
            ChannelSignal::Message { prev, message } => Bytes::from(format!(
                "m{}\n{}\n{}\n{}\n{}",
                message.pos,
                prev_text(*prev),
                message.expires_ms,
                message.payload,
                message.metadata
            )),
            ChannelSignal::Published { prev, pos } => {
                Bytes::from(format!("n{pos}\n{}", prev_text(*prev)))
            }
            ChannelSignal::Deleted => Bytes::from_static(b"x"),
            ChannelSignal::Revoked(g) => Bytes::from(format!("r{g}")),
        }
    }

    /// The signal for a published message: with its data when it is small enough.
    pub fn for_message(prev: Option<Position>, message: StoredMessage) -> ChannelSignal {
        if message.payload.len() + message.metadata.len() <= SIGNAL_DATA_MAX {
            ChannelSignal::Message { prev, message }
        } else {
            ChannelSignal::Published {
                prev,
                pos: message.pos,
            }
        }
    }

    /// Reads the wire form (`None`: not one of ours).
    pub fn decode(b: &[u8]) -> Option<ChannelSignal> {
        Some(match ChannelSignal::head(b)? {
            Head::Deleted => ChannelSignal::Deleted,
            Head::Revoked(g) => ChannelSignal::Revoked(g.to_string()),
            Head::Published { pos, prev } => ChannelSignal::Published { prev, pos },
            Head::Message {
                pos,
                prev,
                expires_ms,
            } => {
                // The head checked the first three lines; the message is the last two.
                let rest = std::str::from_utf8(&b[1..]).ok()?;
                let mut parts = rest.splitn(5, '\n').skip(3);
                let payload = parts.next()?.to_string();
                let metadata = parts.next()?.to_string();
                ChannelSignal::Message {
                    prev,
                    message: StoredMessage {
                        pos,
                        payload,
                        metadata,
                        expires_ms,
                    },
                }
            }
        })
    }
}

/// `-` (none) or a position.
fn prev_of(t: &str) -> Option<Option<Position>> {
    if t == "-" {
        Some(None)
    } else {
        Position::parse(t).map(Some)
    }
}

/// What a doorbell says, read without copying the message it carries (a process fans one
/// doorbell out to every subscriber of the channel: they need its head, and one of them the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head<'a> {
    /// [`ChannelSignal::Message`]: the message is in the doorbell.
    Message {
        /// Its position.
        pos: Position,
        /// The position before it.
        prev: Option<Position>,
        /// Its expiry (0: none).
        expires_ms: u64,
    },
    /// [`ChannelSignal::Published`]: read the message from the stream.
    Published {
        /// Its position.
        pos: Position,
        /// The position before it.
        prev: Option<Position>,
    },
    /// [`ChannelSignal::Deleted`].
    Deleted,
    /// [`ChannelSignal::Revoked`]: the grant's id.
    Revoked(&'a str),
}

impl ChannelSignal {
    /// The head of a doorbell's wire form (`None`: not one of ours).
    pub fn head(b: &[u8]) -> Option<Head<'_>> {
        match b.first()? {
            b'x' => Some(Head::Deleted),
            b'r' => Some(Head::Revoked(std::str::from_utf8(&b[1..]).ok()?)),
            b'n' => {
                let rest = std::str::from_utf8(&b[1..]).ok()?;
                let (pos, p) = rest.split_once('\n')?;
                Some(Head::Published {
                    pos: Position::parse(pos)?,
                    prev: prev_of(p)?,
                })
            }
            b'm' => {
                // Only the first three lines: the payload may be large.
                let mut lines = b[1..].splitn(4, |c| *c == b'\n');
                fn text(l: Option<&[u8]>) -> Option<&str> {
                    std::str::from_utf8(l?).ok()
                }
                let pos = Position::parse(text(lines.next())?)?;
                let p = prev_of(text(lines.next())?)?;
                let expires_ms = text(lines.next())?.parse().ok()?;
                lines.next()?;
                Some(Head::Message {
                    pos,
                    prev: p,
                    expires_ms,
                })
            }
            _ => None,
        }
    }
}

/// The hub topic of a channel: under its tenant, or global.
pub fn channel_topic(tenant: Option<&str>, id: &str) -> Result<Topic, crate::TopicError> {
    match tenant {
        Some(t) => Topic::tenant(t, "channel", id),
        None => Topic::global("channel", id),
    }
}

/// What creating a grant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantCreated {
    /// Created.
    Created,
    /// The channel holds [`MAX_GRANTS_PER_CHANNEL`] live grants already.
    TooMany,
    /// The channel does not exist or is deleted.
    NoChannel,
}

/// Channels, their grants and messages, shared by every process.
#[async_trait]
pub trait ChannelStore: Send + Sync + 'static {
    /// Creates a channel. `false`: its owner (tenant, or none) already holds `max` live channels.
    async fn create_channel(&self, doc: &ChannelDoc, max: usize) -> Result<bool, StoreError>;
    /// A channel (deleted ones too, while their tombstone lasts).
    async fn get_channel(&self, id: &str) -> Result<Option<Channel>, StoreError>;
    /// Soft-deletes a channel: it stays as a tombstone ([`TOMBSTONE_TTL_SECS`]), its messages
    /// and grants go, and [`ChannelSignal::Deleted`] rings its topic. `false`: no live channel.
    async fn delete_channel(&self, doc: &ChannelDoc) -> Result<bool, StoreError>;
    /// Appends a message (`payload` and `metadata` compact JSON, `metadata` empty for none;
    /// `expires_ms` 0 for no TTL), keeping the last `keep`, and rings the topic
    /// ([`ChannelSignal::for_message`]) in the same step. `None`: no live channel (nothing is
    /// stored).
    async fn publish(
        &self,
        doc: &ChannelDoc,
        payload: &str,
        metadata: &str,
        expires_ms: u64,
        keep: usize,
    ) -> Result<Option<StoredMessage>, StoreError>;
    /// The retained messages after `after` (`None`: from the oldest), at most `limit`, and no
    /// more than `max_bytes` of payload and metadata (at least one message, whatever its size):
    /// `has_more` says whether more follow.
    async fn messages_after(
        &self,
        id: &str,
        after: Option<Position>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<MessagesRead, StoreError>;
    /// Records a grant whose token hash is `grant.token_hash`. At `max`, grants revoked or
    /// expired by `now_ms` are forgotten first, to make room.
    async fn create_grant(
        &self,
        grant: &Grant,
        max: usize,
        now_ms: u64,
    ) -> Result<GrantCreated, StoreError>;
    /// A grant of a channel by id.
    async fn get_grant(&self, channel: &str, grant_id: &str) -> Result<Option<Grant>, StoreError>;
    /// A grant of a channel by its token's hash (revoked ones are not found this way).
    async fn grant_by_token(
        &self,
        channel: &str,
        token_hash: &str,
    ) -> Result<Option<Grant>, StoreError>;
    /// Revokes a grant at `now_ms` (a second revoke keeps the first time) and rings
    /// [`ChannelSignal::Revoked`]. `None`: no such grant on a live channel.
    async fn revoke_grant(
        &self,
        doc: &ChannelDoc,
        grant_id: &str,
        now_ms: u64,
    ) -> Result<Option<Grant>, StoreError>;
    /// The ids of a tenant's live channels (`None`: the channels of no tenant), at most `limit`.
    async fn list_channels(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Deletes every channel of a tenant, for good (streams end).
    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError>;
}

/// SHA-256 hex of a token (what is stored).
pub fn token_hash(token: &str) -> String {
    use std::fmt::Write;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A new random token with `prefix` (`pub_`, `rdg_`): 32 hex digits of randomness.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_uuidv7_positions_of_their_channel() {
        let ch = "7bb4ecca-9a04-4c7e-84e0-2f55967a21d5";
        let other = "0bb4ecca-9a04-4c7e-84e0-2f55967a21d5";
        for pos in [
            Position { ms: 0, seq: 0 },
            Position {
                ms: 1_764_500_000_123,
                seq: 0,
            },
            Position {
                ms: 1_764_500_000_123,
                seq: 7,
            },
            Position {
                ms: (1 << 48) - 1,
                seq: u64::MAX,
            },
        ] {
            let id = message_id(ch, pos);
            let u = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(u.get_version_num(), 7);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(position_of(ch, &id), Some(pos));
            assert_ne!(message_id(other, pos), id);
        }
        let a = message_id(ch, Position { ms: 5, seq: 0 });
        let b = message_id(ch, Position { ms: 6, seq: 0 });
        assert!(a < b, "ids sort by time");
        assert_eq!(position_of(ch, "not-a-uuid"), None);
        assert_eq!(position_of(ch, &uuid::Uuid::new_v4().to_string()), None);
    }

    #[test]
    fn signals_round_trip() {
        let m = ChannelSignal::Message {
            prev: Some(Position { ms: 1, seq: 2 }),
            message: StoredMessage {
                pos: Position { ms: 3, seq: 0 },
                payload: "\"a\\nb\"".into(),
                metadata: String::new(),
                expires_ms: 99,
            },
        };
        assert_eq!(ChannelSignal::decode(&m.encode()), Some(m));
        for s in [
            ChannelSignal::Deleted,
            ChannelSignal::Revoked("g".into()),
            ChannelSignal::Published {
                prev: None,
                pos: Position { ms: 4, seq: 1 },
            },
        ] {
            assert_eq!(ChannelSignal::decode(&s.encode()), Some(s));
        }
        let big = StoredMessage {
            pos: Position { ms: 9, seq: 0 },
            payload: "1".repeat(SIGNAL_DATA_MAX + 1),
            metadata: String::new(),
            expires_ms: 0,
        };
        assert!(matches!(
            ChannelSignal::for_message(None, big),
            ChannelSignal::Published { .. }
        ));
        assert_eq!(ChannelSignal::decode(b"q"), None);
        assert_eq!(ChannelSignal::decode(b"m1-0\n-\nx\n1\n"), None);
        let m = ChannelSignal::Message {
            prev: None,
            message: StoredMessage {
                pos: Position { ms: 3, seq: 1 },
                payload: "1".into(),
                metadata: String::new(),
                expires_ms: 5,
            },
        };
        assert_eq!(
            ChannelSignal::head(&m.encode()),
            Some(Head::Message {
                pos: Position { ms: 3, seq: 1 },
                prev: None,
                expires_ms: 5
            })
        );
        assert_eq!(ChannelSignal::head(b"x"), Some(Head::Deleted));
        assert_eq!(ChannelSignal::head(b"rg1"), Some(Head::Revoked("g1")));
        assert_eq!(
            ChannelSignal::head(b"n4-1\n3-0"),
            Some(Head::Published {
                pos: Position { ms: 4, seq: 1 },
                prev: Some(Position { ms: 3, seq: 0 })
            })
        );
        assert_eq!(ChannelSignal::head(b"m1-0\n-\nx\n1\n"), None);
        assert_eq!(ChannelSignal::head(b"m1-0\n-\n0"), None);
    }

    #[test]
    fn ids_and_tokens() {
        assert!(valid_channel_id(&uuid::Uuid::new_v4().to_string()));
        assert!(!valid_channel_id("a:b"));
        assert!(!valid_channel_id(""));
        let t = new_token("pub_");
        assert!(t.starts_with("pub_") && t.len() == 36);
        assert_eq!(token_hash("x").len(), 64);
        assert_ne!(token_hash("x"), token_hash("y"));
    }
}
