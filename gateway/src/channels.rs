//! Channels (SPEC §7): the operations behind the REST routes, the SSE streams and the channel MCP
//! tools, so each of those is a thin adapter. Errors are the `{"error":{"code","message"}}`
//! envelope ([`ApiError`]); the MCP tools turn them into tool errors.
//!
//! ```text
//!  create ─► (tenant from X-Tenant-ID) ─► record + publish token (shown once, stored hashed)
//!  owner(id, X-Publish-Token) ─► the live channel ─► publish · get · delete · grants · revoke
//!  reader(channel, read token | publish token) ─► messages, SSE (routes::channels::stream)
//! ```

use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use understudy_core::channels::{
    Channel, ChannelDoc, GrantCreated, MAX_CHANNELS_PER_OWNER, MAX_DESCRIPTION,
    MAX_GRANTS_PER_CHANNEL, MAX_LABEL, MAX_NAME, MAX_PAGE, Position, StoredMessage, Visibility,
    message_id, new_token, position_of, token_hash, valid_channel_id, valid_grant_id,
};
use understudy_core::channels::{Grant, GrantCreated as _GrantCreated};
use understudy_core::{StoreError, now_ms};

use crate::api::{ApiError, Code};
use crate::state::App;

/// Longest TTL a message or channel may ask for (a year).
pub const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;
/// Largest metadata object, serialised.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Messages a read returns when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most payload and metadata bytes one read returns (past it the page ends early, with
/// `has_more`; one message at least).
pub const READ_BYTES: usize = 8 * 1024 * 1024;

/// `POST /v1/channels`, and the `create_channel` tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// The name.
    pub name: String,
    /// `public` or `private`.
    pub visibility: Visibility,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
    /// The TTL of messages published without one.
    #[serde(default)]
    pub default_ttl_seconds: Option<u64>,
}

/// `POST /v1/channels/{id}/publish`, and the `publish_message` tool (less its token and id).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// Any JSON value but null.
    #[serde(default)]
    pub payload: Option<Value>,
    /// An object of metadata.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The message's TTL (else the channel's default).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// `POST /v1/channels/{id}/read-grants`, and the `create_read_grant` tool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// A label.
    #[serde(default)]
    pub label: Option<String>,
    /// When it stops working (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    match jiff::Timestamp::from_millisecond(ms as i64) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => String::new(),
    }
}

/// A channel-store failure: counted, logged at debug, answered 503 `unavailable`.
pub fn store_error(app: &App, e: StoreError) -> ApiError {
    app.metrics.redis_error("channels");
    tracing::debug!(error = %e, "channel store failed");
    ApiError::unavailable("the channel store is unreachable; retry shortly")
}

fn not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found(format!("channel '{}' not found", shown.escape_default()))
}

fn check_ttl(field: &str, ttl: Option<u64>) -> Result<(), ApiError> {
    match ttl {
        Some(t) if t == 0 || t > MAX_TTL_SECONDS => Err(ApiError::invalid(format!(
            "{field} must be between 1 and {MAX_TTL_SECONDS} seconds"
        ))),
        _ => Ok(()),
    }
}

/// A channel as the API shows it (flat: SPEC §7.1), with its SSE URL on `base`.
pub fn channel_json(doc: &ChannelDoc, base: &str) -> Value {
    json!({
        "id": doc.id,
        "name": doc.name,
        "visibility": doc.visibility.as_str(),
        "description": doc.description,
        "default_ttl_seconds": doc.default_ttl_seconds,
        "created_at": rfc3339(doc.created_ms),
        "tenant_id": doc.tenant,
        "channel_url": format!("{base}/channel/v1/{}/{}", doc.visibility.as_str(), doc.id),
    })
}

/// Creates a channel of `tenant` (or of none): the channel, its publish token (shown once) and
/// its URL.
pub async fn create(
    app: &App,
    tenant: Option<&str>,
    input: CreateChannel,
    base: &str,
) -> Result<Value, ApiError> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::invalid(format!(
            "name must be 1 to {MAX_NAME} characters"
        )));
    }
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::invalid(format!(
            "description must be at most {MAX_DESCRIPTION} characters"
        )));
    }
    check_ttl("default_ttl_seconds", input.default_ttl_seconds)?;
    let token = new_token("pub_");
    let doc = ChannelDoc {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        visibility: input.visibility,
        description: input.description,
        default_ttl_seconds: input.default_ttl_seconds,
        created_ms: now_ms(),
        tenant: tenant.map(String::from),
        publish_token_hash: token_hash(&token),
    };
    let created = app
        .stores
        .channels
        .create_channel(&doc, MAX_CHANNELS_PER_OWNER)
        .await
        .map_err(|e| store_error(app, e))?;
    if !created {
        let owner = match &doc.tenant {
            Some(t) => format!("tenant '{t}'"),
            None => "channels without a tenant".to_string(),
        };
        return Err(ApiError::conflict(format!(
            "{owner} already hold {MAX_CHANNELS_PER_OWNER} live channels, the most allowed: delete some first"
        )));
    }
    let mut body = channel_json(&doc, base);
    body["publish_token"] = json!(token);
    Ok(body)
}

/// A live channel by id (deleted, unknown and malformed ids are all 404).
pub async fn live(app: &App, id: &str) -> Result<Channel, ApiError> {
    if !valid_channel_id(id) {
        return Err(not_found(id));
    }
    match app.stores.channels.get_channel(id).await {
        Ok(Some(c)) if !c.deleted => Ok(c),
        Ok(_) => Err(not_found(id)),
        Err(e) => Err(store_error(app, e)),
    }
}

/// The live channel `id`, if `token` is its publish token.
pub async fn owner(app: &App, id: &str, token: Option<&str>) -> Result<Channel, ApiError> {
    let channel = live(app, id).await?;
    let Some(token) = token else {
        return Err(ApiError::unauthorized(
            "send the channel's publish token as X-Publish-Token",
        ));
    };
    if !is_publish_token(&channel.doc, token) {
        return Err(ApiError::forbidden(
            "this is not the channel's publish token",
        ));
    }
    Ok(channel)
}

fn is_publish_token(doc: &ChannelDoc, token: &str) -> bool {
    bool::from(
        token_hash(token)
            .as_bytes()
            .ct_eq(doc.publish_token_hash.as_bytes()),
    )
}

/// Who may read a channel: anyone for a public one; for a private one, a valid read grant's
/// token (returned, so a stream can end when it is revoked or expires) or the publish token.
pub async fn reader(
    app: &App,
    channel: &Channel,
    token: Option<&str>,
) -> Result<Option<Grant>, ApiError> {
    if channel.doc.visibility == Visibility::Public {
        return Ok(None);
    }
    let Some(token) = token else {
        return Err(ApiError::unauthorized(
            "this channel is private: send a read token as Authorization: Bearer <token> (or ?access_token= on the SSE URL)",
        ));
    };
    if is_publish_token(&channel.doc, token) {
        return Ok(None);
    }
    let grant = app
        .stores
        .channels
        .grant_by_token(&channel.doc.id, &token_hash(token))
        .await
        .map_err(|e| store_error(app, e))?;
    match grant {
        Some(g) if g.valid_at(now_ms()) => Ok(Some(g)),
        Some(_) => Err(ApiError::forbidden("this read grant has expired")),
        None => Err(ApiError::forbidden(
            "this token does not grant reading this channel (unknown or revoked)",
        )),
    }
}

/// Publishes a message: the message as the API shows it.
pub async fn publish(app: &App, channel: &Channel, input: Publish) -> Result<Value, ApiError> {
    let Some(payload) = input.payload else {
        return Err(ApiError::invalid(
            "payload is required (any JSON value but null)",
        ));
    };
    let payload = serde_json::to_string(&payload).unwrap_or_default();
    let limit = app.options.channel_max_payload_bytes;
    if payload.len() > limit {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "payload is {} bytes serialised; the most is {limit}",
                payload.len()
            ),
        ));
    }
    let metadata = match input.metadata {
        None | Some(Value::Null) => String::new(),
        Some(m @ Value::Object(_)) => serde_json::to_string(&m).unwrap_or_default(),
        Some(_) => return Err(ApiError::invalid("metadata must be an object")),
    };
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "metadata is {} bytes serialised; the most is {MAX_METADATA_BYTES}",
                metadata.len()
            ),
        ));
    }
    check_ttl("ttl_seconds", input.ttl_seconds)?;
    let now = now_ms();
    let expires_ms = input
        .ttl_seconds
        .or(channel.doc.default_ttl_seconds)
        .map_or(0, |t| now + t * 1000);
    let stored = app
        .stores
        .channels
        .publish(
            &channel.doc,
            &payload,
            &metadata,
            expires_ms,
            app.options.channel_retention,
        )
        .await
        .map_err(|e| store_error(app, e))?;
    let Some(message) = stored else {
        // Deleted between the check and the write: nothing was stored.
        return Err(not_found(&channel.doc.id));
    };
    app.metrics.channels.published.inc();
    let mut out: Value = serde_json::from_str(&render(&channel.doc.id, &message))
        .map_err(|e| ApiError::invalid(format!("could not render the message: {e}")))?;
    if message.expires_ms > 0 {
        out["expires_at"] = json!(rfc3339(message.expires_ms));
    }
    Ok(out)
}

/// A message as subscribers and readers get it: `{"id","payload","metadata","published_at"}`,
/// written from the stored JSON text without parsing it again.
pub fn render(channel: &str, m: &StoredMessage) -> String {
    let metadata = if m.metadata.is_empty() {
        "null"
    } else {
        m.metadata.as_str()
    };
    format!(
        "{{\"id\":\"{}\",\"payload\":{},\"metadata\":{},\"published_at\":\"{}\"}}",
        message_id(channel, m.pos),
        m.payload,
        metadata,
        rfc3339(m.pos.ms)
    )
}

/// The SSE frame of a message: `id:`, `event: message`, `data:` [`render`]ed.
pub fn frame(channel: &str, m: &StoredMessage) -> bytes::Bytes {
    let id = message_id(channel, m.pos);
    let data = render(channel, m);
    crate::sse::Event {
        id: Some(&id),
        event: Some("message"),
        data: &data,
    }
    .encode()
}

/// The last frame rendered per channel in this process: a doorbell reaches every subscriber of
/// its channel here, and one renders the message for all. Bounded: frames over
/// [`FRAME_CACHE_MAX`] are not kept, and past [`FRAME_CACHE_BYTES`] in all it starts over.
#[derive(Default)]
pub struct Frames(std::sync::Mutex<FrameCache>);

/// Largest frame kept in [`Frames`].
pub const FRAME_CACHE_MAX: usize = 64 * 1024;
/// Most bytes of frames kept in [`Frames`].
pub const FRAME_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// What [`Frames`] holds: channel → its last frame, and their total size.
#[derive(Default)]
pub struct FrameCache {
    frames: std::collections::HashMap<String, (Position, bytes::Bytes)>,
    bytes: usize,
}

impl Frames {
    /// The frame of the message at `pos` in `channel`, rendered by `render` if no subscriber
    /// did yet (`None`: `render` could not).
    pub fn get_or_render(
        &self,
        channel: &str,
        pos: Position,
        render: impl FnOnce() -> Option<bytes::Bytes>,
    ) -> Option<bytes::Bytes> {
        {
            let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((p, f)) = cache.frames.get(channel)
                && *p == pos
            {
                return Some(f.clone());
            }
        }
        let f = render()?;
        if f.len() > FRAME_CACHE_MAX {
            return Some(f);
        }
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.bytes + f.len() > FRAME_CACHE_BYTES {
            cache.frames.clear();
            cache.bytes = 0;
        }
        let old = match cache.frames.get(channel) {
            Some((p, _)) if *p >= pos => return Some(f),
            Some((_, old)) => old.len(),
            None => 0,
        };
        cache.bytes = cache.bytes - old + f.len();
        cache.frames.insert(channel.to_string(), (pos, f.clone()));
        Some(f)
    }
}

/// The position a client's message id names in `channel` (400 when it cannot be one).
pub fn position(channel: &str, message_id: &str) -> Result<Position, ApiError> {
    position_of(channel, message_id)
        .ok_or_else(|| ApiError::invalid("after_message_id is not a message id of this channel"))
}

/// The live messages after `after` (`None`: from the oldest retained), at most `limit`
/// (1–1,000): `{"messages":[…],"has_more"}`.
pub async fn messages(
    app: &App,
    channel: &Channel,
    after: Option<Position>,
    limit: usize,
) -> Result<Value, ApiError> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    // TTLs apply at delivery: expired messages are passed over, reading on (a page of at least
    // 100 at a time) until the page is full, its byte budget spent, or the stream ends.
    let now = now_ms();
    let mut list = String::from("[");
    let mut count = 0;
    let mut bytes = 0;
    let mut cursor = after;
    let has_more = 'read: loop {
        let want = (limit - count).clamp(100, MAX_PAGE);
        let read = app
            .stores
            .channels
            .messages_after(
                &channel.doc.id,
                cursor,
                want,
                READ_BYTES.saturating_sub(bytes),
            )
            .await
            .map_err(|e| store_error(app, e))?;
        if !read.exists {
            return Err(not_found(&channel.doc.id));
        }
        for m in &read.messages {
            if count == limit || (count > 0 && bytes >= READ_BYTES) {
                break 'read true;
            }
            cursor = Some(m.pos);
            if !m.live_at(now) {
                continue;
            }
            if count > 0 {
                list.push(',');
            }
            list.push_str(&render(&channel.doc.id, m));
            count += 1;
            bytes += m.payload.len() + m.metadata.len();
        }
        if !read.has_more {
            break false;
        }
        if count == limit || bytes >= READ_BYTES {
            break true;
        }
    };
    list.push(']');
    let messages: Value = serde_json::from_str(&list)
        .map_err(|e| ApiError::invalid(format!("could not render the messages: {e}")))?;
    Ok(json!({"messages": messages, "has_more": has_more}))
}

/// A grant as the API shows it (never its token's hash).
pub fn grant_json(g: &Grant) -> Value {
    json!({
        "id": g.id,
        "channel_id": g.channel_id,
        "label": g.label,
        "expires_at": g.expires_ms.map(rfc3339),
        "created_at": rfc3339(g.created_ms),
        "revoked_at": g.revoked_ms.map(rfc3339),
    })
}

/// Creates a read grant: the grant with its `raw_token` (shown once).
pub async fn create_grant(
    app: &App,
    channel: &Channel,
    input: CreateGrant,
) -> Result<Value, ApiError> {
    if input
        .label
        .as_ref()
        .is_some_and(|l| l.chars().count() > MAX_LABEL)
    {
        return Err(ApiError::invalid(format!(
            "label must be at most {MAX_LABEL} characters"
        )));
    }
    let now = now_ms();
    let expires_ms = match &input.expires_at {
        None => None,
        Some(text) => {
            let t: jiff::Timestamp = text.parse().map_err(|_| {
                ApiError::invalid(format!(
                    "expires_at must be an RFC 3339 time (e.g. 2030-01-01T00:00:00Z), not {:?}",
                    text.chars().take(64).collect::<String>()
                ))
            })?;
            let ms = t.as_millisecond();
            if ms <= now as i64 {
                return Err(ApiError::invalid("expires_at must be in the future"));
            }
            Some(ms as u64)
        }
    };
    let token = new_token("rdg_");
    let grant = Grant {
        id: uuid::Uuid::new_v4().to_string(),
        channel_id: channel.doc.id.clone(),
        label: input.label,
        expires_ms,
        created_ms: now,
        revoked_ms: None,
        token_hash: token_hash(&token),
    };
    let created = app
        .stores
        .channels
        .create_grant(&grant, MAX_GRANTS_PER_CHANNEL, now)
        .await
        .map_err(|e| store_error(app, e))?;
    match created {
        GrantCreated::Created => {
            let mut body = grant_json(&grant);
            body["raw_token"] = json!(token);
            Ok(body)
        }
        GrantCreated::TooMany => Err(ApiError::conflict(format!(
            "this channel holds {MAX_GRANTS_PER_CHANNEL} read grants (revoked and expired ones included), the most allowed"
        ))),
        _GrantCreated::NoChannel => Err(not_found(&channel.doc.id)),
    }
}

/// Revokes a read grant: the grant, with `revoked_at`. Streams reading with it end.
pub async fn revoke_grant(app: &App, channel: &Channel, grant_id: &str) -> Result<Value, ApiError> {
    let missing = || {
        let shown: String = grant_id.chars().take(64).collect();
        ApiError::not_found(format!("read grant '{}' not found", shown.escape_default()))
    };
    if !valid_grant_id(grant_id) {
        return Err(missing());
    }
    let revoked = app
        .stores
        .channels
        .revoke_grant(&channel.doc, grant_id, now_ms())
        .await
        .map_err(|e| store_error(app, e))?;
    revoked.map(|g| grant_json(&g)).ok_or_else(missing)
}

/// Soft-deletes a channel: `{"id","deleted":true}`. Its streams end.
pub async fn delete(app: &App, channel: &Channel) -> Result<Value, ApiError> {
    let done = app
        .stores
        .channels
        .delete_channel(&channel.doc)
        .await
        .map_err(|e| store_error(app, e))?;
    if !done {
        return Err(not_found(&channel.doc.id));
    }
    Ok(json!({"id": channel.doc.id, "deleted": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_500_000_123), "2025-11-30T10:53:20.123Z");
    }

    #[test]
    fn frames_render_once_per_message_and_stay_bounded() {
        let frames = Frames::default();
        let p = |ms| Position { ms, seq: 0 };
        let mut renders = 0;
        for _ in 0..3 {
            let f = frames.get_or_render("c", p(1), || {
                renders += 1;
                Some(bytes::Bytes::from_static(b"one"))
            });
            assert_eq!(f.as_deref(), Some(&b"one"[..]));
        }
        assert_eq!(renders, 1, "one render for every subscriber");
        // A newer message replaces it; an older one is rendered but not kept.
        frames.get_or_render("c", p(2), || Some(bytes::Bytes::from_static(b"two")));
        frames.get_or_render("c", p(1), || Some(bytes::Bytes::from_static(b"old")));
        let again = frames.get_or_render("c", p(2), || panic!("kept"));
        assert_eq!(again.as_deref(), Some(&b"two"[..]));
        // Large frames are not kept; the byte budget holds.
        let big = bytes::Bytes::from(vec![b'x'; FRAME_CACHE_MAX + 1]);
        frames.get_or_render("big", p(1), || Some(big.clone()));
        assert!(!frames.0.lock().unwrap().frames.contains_key("big"));
        let chunk = bytes::Bytes::from(vec![b'x'; FRAME_CACHE_MAX]);
        for i in 0..(FRAME_CACHE_BYTES / FRAME_CACHE_MAX + 10) {
            frames.get_or_render(&format!("ch{i}"), p(1), || Some(chunk.clone()));
            assert!(frames.0.lock().unwrap().bytes <= FRAME_CACHE_BYTES);
        }
        assert_eq!(frames.get_or_render("none", p(1), || None), None);
    }

    #[test]
    fn messages_render_from_stored_text() {
        let m = StoredMessage {
            pos: Position { ms: 1000, seq: 0 },
            payload: "{\"a\":[1,2]}".into(),
            metadata: String::new(),
            expires_ms: 0,
        };
        let v: Value = serde_json::from_str(&render("c", &m)).unwrap();
        assert_eq!(v["payload"], json!({"a": [1, 2]}));
        assert_eq!(v["metadata"], Value::Null);
        assert_eq!(v["published_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(position_of("c", v["id"].as_str().unwrap()), Some(m.pos));
    }
}
