//! Messages: ids, attributes, outgoing options, and what a handler receives.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

/// String attributes carried beside a message's payload.
pub type Attributes = BTreeMap<String, String>;

/// Attribute names starting with this prefix are reserved for tidings' own metadata.
pub const RESERVED_ATTRIBUTE_PREFIX: &str = "tidings";

/// A message id: assigned by tidings when the message is published and kept across publish retries, so
/// exactly-once topics can de-duplicate a republish.
///
/// Ids up to 38 bytes (tidings' own UUIDs, SQS and Pub/Sub ids) are stored inline, 40 bytes in all, so a queued
/// message pays no allocation for its id; longer ones share one allocation between clones.
#[derive(Clone)]
pub struct MessageId(Repr);

const INLINE: usize = 38;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Shared(Arc<str>),
}

impl PartialEq for MessageId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for MessageId {}
impl std::hash::Hash for MessageId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl PartialOrd for MessageId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MessageId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::MessageId;

    #[test]
    fn short_and_long_ids_keep_their_text_and_compare_by_it() {
        let short = MessageId::from("0190a6c2-7b1e-7c3a-9f00-0123456789ab");
        let long_text = "x".repeat(100);
        let long = MessageId::from(long_text.clone());
        assert_eq!(short.as_str(), "0190a6c2-7b1e-7c3a-9f00-0123456789ab");
        assert_eq!(long.as_str(), long_text);
        assert_eq!(MessageId::from(""), MessageId::from(String::new()));
        assert_eq!(MessageId::from("é".repeat(19).as_str()).as_str(), "é".repeat(19), "38 bytes of UTF-8 stay inline");
        assert!(MessageId::from("a") < MessageId::from("b") && long > short);
        assert_eq!(std::mem::size_of::<MessageId>(), 40);
    }

    #[test]
    fn generated_ids_are_unique_uuid_v7() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| MessageId::generate().to_string()).collect();
        assert_eq!(ids.len(), 10_000);
        let u = uuid::Uuid::parse_str(ids.iter().next().unwrap()).unwrap();
        assert_eq!(u.get_version_num(), 7);
    }

    #[test]
    fn a_generated_id_is_the_uuid_v7_of_its_time_in_canonical_text() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_123_456);
        for _ in 0..1_000 {
            let id = MessageId::generate_at(at);
            let u = uuid::Uuid::parse_str(id.as_str()).unwrap();
            assert_eq!(u.hyphenated().to_string(), id.as_str(), "canonical lower-case hyphenated text");
            assert_eq!((u.get_version_num(), u.get_variant()), (7, uuid::Variant::RFC4122));
            let (secs, nanos) = u.get_timestamp().unwrap().to_unix();
            assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, 1_764_000_123_456);
        }
    }
}

impl MessageId {
    /// A new, unique, time-ordered id (UUIDv7). The random bits come from a per-thread generator seeded once from
    /// the OS, so generating an id makes no system call.
    pub fn generate() -> Self {
        Self::generate_at(SystemTime::now())
    }

    /// [`MessageId::generate`] with the time taken by the caller (a publish reads the clock once for the id and the
    /// publish time).
    pub(crate) fn generate_at(now: SystemTime) -> Self {
        let millis = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let r = fast_random();
        // RFC 9562's layout: 48 bits of Unix milliseconds, version 7, 12 random bits, variant 0b10, 62 random bits.
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6] = 0x70 | (r[0] & 0x0f);
        bytes[7] = r[1];
        bytes[8] = 0x80 | (r[2] & 0x3f);
        bytes[9..].copy_from_slice(&r[3..]);
        // Written straight into the inline form, hyphenated lower-case hex (a publish makes one of these): two digits
        // per byte from a table, at fixed places.
        const PAIRS: [[u8; 2]; 256] = {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut t = [[0u8; 2]; 256];
            let mut i = 0;
            while i < 256 {
                t[i] = [HEX[i >> 4], HEX[i & 0x0f]];
                i += 1;
            }
            t
        };
        const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut buf = [b'-'; INLINE];
        for (byte, at) in bytes.iter().zip(AT) {
            buf[at..at + 2].copy_from_slice(&PAIRS[usize::from(*byte)]);
        }
        Self(Repr::Inline { len: 36, buf })
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever filled from a whole `&str` of `len` bytes, so the bytes are UTF-8.
            Repr::Inline { len, buf } => std::str::from_utf8(&buf[..*len as usize]).unwrap_or_default(),
            Repr::Shared(s) => s,
        }
    }

    fn new(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Self(Repr::Inline { len: s.len() as u8, buf })
        } else {
            Self(Repr::Shared(s.into()))
        }
    }
}

/// 10 random bytes from a thread-local xorshift generator seeded from the OS.
fn fast_random() -> [u8; 10] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap()) | 1);
    }
    STATE.with(|s| {
        let next = || {
            let mut x = s.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.set(x);
            x
        };
        let (a, b) = (next().to_le_bytes(), next().to_le_bytes());
        let mut out = [0u8; 10];
        out[..8].copy_from_slice(&a);
        out[8..].copy_from_slice(&b[..2]);
        out
    })
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}
impl From<String> for MessageId {
    fn from(s: String) -> Self {
        Self::new(&s)
    }
}
impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.as_str())
    }
}

/// Per-message publish options: attributes and an ordering key.
///
/// ```
/// use tidings::PublishOptions;
/// let opts = PublishOptions::new().attribute("source", "web").ordering_key("user-42");
/// assert_eq!(opts.ordering_key.as_deref(), Some("user-42"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// String attributes; names starting with `tidings` are reserved.
    pub attributes: Attributes,
    /// Messages sharing a key are delivered in order on an ordered topic; must be `None` on an unordered topic.
    pub ordering_key: Option<String>,
    /// Reuse an id (an outbox relay republishing); `None` assigns a new one. A custom id is 1-128 characters of
    /// printable ASCII without spaces (`!` to `~`): what every backend can carry and de-duplicate on (SQS FIFO's
    /// `MessageDeduplicationId` allows no more). Exactly-once topics drop a second message with the same id within
    /// the backend's de-duplication window.
    pub id: Option<MessageId>,
    /// Deliver to no subscription before this time ([`PublishOptions::deliver_at`], [`PublishOptions::deliver_after`]);
    /// `None`, or a time already past at publish, delivers at once.
    pub deliver_at: Option<SystemTime>,
}

/// Longest custom message id.
pub const MAX_ID_LEN: usize = 128;

/// Checks a custom message id against the rule of [`PublishOptions::id`]; the error names the id and the rule.
pub(crate) fn validate_custom_id(id: &MessageId) -> crate::Result<()> {
    let s = id.as_str();
    if s.is_empty() || s.len() > MAX_ID_LEN || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(crate::Error::invalid(format!(
            "message id {s:?} is invalid: a custom id must be 1-{MAX_ID_LEN} characters of printable ASCII without \
             spaces (! to ~)"
        )));
    }
    Ok(())
}

impl PublishOptions {
    /// No attributes, no ordering key.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds the attribute `key` = `value`: a string header a handler reads with [`Message::attribute`] and a plain
    /// client sees as the broker's own attribute (SNS/SQS message attribute, Pub/Sub attribute, NATS header). Names
    /// starting with `tidings` are refused at publish, as is more than the backend's
    /// [`max_attributes`](crate::Capabilities::max_attributes).
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
    /// Sets the ordering key: on an ordered topic ([`TopicConfig::ordered`](crate::TopicConfig::ordered)), messages
    /// sharing it are handled one at a time in publish order. A key on an unordered topic is refused at publish.
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
    /// Publishes under a given id instead of a new one.
    pub fn id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }
    /// Delivers the message to no subscription before `at`: the publish returns (with the id) as soon as the backend
    /// has accepted it, and each subscription's handler gets it at `at` or shortly after. A time in the past delivers
    /// at once; one beyond the backend's or the subscriptions' message retention is refused, naming both.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tidings::PublishOptions;
    /// let at = SystemTime::now() + Duration::from_secs(3600);
    /// assert_eq!(PublishOptions::new().deliver_at(at).deliver_at, Some(at));
    /// ```
    pub fn deliver_at(mut self, at: SystemTime) -> Self {
        self.deliver_at = Some(at);
        self
    }
    /// Delivers the message `delay` from now ([`PublishOptions::deliver_at`] of now plus `delay`).
    pub fn deliver_after(self, delay: std::time::Duration) -> Self {
        self.deliver_at(SystemTime::now() + delay)
    }
}

/// Metadata of a delivered message.
///
/// Built with [`Metadata::new`] and the `with_*` methods (the struct is `#[non_exhaustive]`), for example to unit-test
/// a handler:
///
/// ```
/// use std::time::SystemTime;
/// use tidings::{Message, MessageId, Metadata};
///
/// let meta = Metadata::new(MessageId::from("m-1"), SystemTime::now(), 2).with_attribute("source", "test");
/// let msg = Message::new("payload", meta);
/// assert_eq!(msg.attempt(), 2);
/// assert_eq!(msg.attribute("source"), Some("test"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// The id assigned at publish.
    pub id: MessageId,
    /// When the message was published.
    pub publish_time: SystemTime,
    /// Which delivery this is; the first delivery is 1.
    pub attempt: u32,
    /// The attributes set at publish.
    pub attributes: Attributes,
    /// The ordering key set at publish.
    pub ordering_key: Option<String>,
}

impl Metadata {
    /// Metadata without attributes or ordering key.
    pub fn new(id: MessageId, publish_time: SystemTime, attempt: u32) -> Self {
        Self { id, publish_time, attempt, attributes: Attributes::new(), ordering_key: None }
    }
    /// The same metadata with `attributes` in place of any set before, as if the publisher had set them.
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }
    /// The same metadata with the attribute `key` = `value` added (replacing one of the same name).
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }
    /// The same metadata as if published with the ordering key `key` on an ordered topic.
    pub fn with_ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
}

/// A decoded message handed to a subscription's handler. Derefs to the payload.
#[derive(Debug, Clone)]
pub struct Message<T> {
    /// The decoded payload.
    pub payload: T,
    /// Id, publish time, attempt, attributes, ordering key.
    pub meta: Metadata,
    /// Fires when the subscription starts shutting down.
    shutdown: Arc<tokio_util::sync::CancellationToken>,
}

impl<T> Message<T> {
    /// A message as a handler receives it (for unit tests of handlers); its shutdown signal never fires.
    pub fn new(payload: T, meta: Metadata) -> Self {
        Self { payload, meta, shutdown: Arc::default() }
    }

    pub(crate) fn with_shutdown(
        payload: T,
        meta: Metadata,
        shutdown: Arc<tokio_util::sync::CancellationToken>,
    ) -> Self {
        Self { payload, meta, shutdown }
    }

    /// Whether the subscription is shutting down: the handler has until the shutdown timeout to finish, after which
    /// it is dropped (cancelled at its next `.await`) and its message stays unacked, to be redelivered.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Completes when the subscription starts shutting down (see [`Message::is_shutting_down`]); a long handler can
    /// `select!` on it to stop early and return an error, so the message is retried elsewhere.
    pub async fn shutdown_requested(&self) {
        self.shutdown.cancelled().await
    }

    /// The id assigned at publish.
    pub fn id(&self) -> &MessageId {
        &self.meta.id
    }
    /// Which delivery this is; the first delivery is 1.
    pub fn attempt(&self) -> u32 {
        self.meta.attempt
    }
    /// When the message was published (by the broker's clock for a message from another producer).
    pub fn publish_time(&self) -> SystemTime {
        self.meta.publish_time
    }
    /// The ordering key set at publish (on an ordered topic).
    pub fn ordering_key(&self) -> Option<&str> {
        self.meta.ordering_key.as_deref()
    }
    /// The attribute `key` as the publisher set it ([`PublishOptions::attribute`]); `None` when it was not set.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.meta.attributes.get(key).map(String::as_str)
    }
    /// The payload, without metadata.
    pub fn into_inner(self) -> T {
        self.payload
    }
}

impl<T> Deref for Message<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.payload
    }
}
