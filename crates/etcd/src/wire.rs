//! The JSON shapes of etcd's gRPC-JSON gateway (`/v3/...`, served by etcd 3.4 and later): the
//! protobuf messages in proto3 JSON form, so bytes are base64, 64-bit integers are strings, and
//! fields at their default value (0, false, empty, enum 0) are left out. Only the fields this
//! crate reads or writes are declared; the rest are ignored. Runs on the `lb-store` thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// `/v3/kv/range`, `/v3/kv/txn` and friends.
pub(crate) const RANGE: &str = "/v3/kv/range";
/// Compare-and-swap.
pub(crate) const TXN: &str = "/v3/kv/txn";
/// Streaming watch (the whole request body is read before the stream starts).
pub(crate) const WATCH: &str = "/v3/watch";
/// User name and password to token.
pub(crate) const AUTHENTICATE: &str = "/v3/auth/authenticate";

/// Base64 of raw bytes, as the gateway wants keys and values.
pub(crate) fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn decode(text: &str) -> Result<Vec<u8>, String> {
    B64.decode(text).map_err(|e| format!("bad base64: {e}"))
}

/// proto3 JSON writes int64 as a string; accept a number too.
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Num(i64),
        Str(String),
    }
    match Int::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s.parse().map_err(de::Error::custom),
    }
}

fn ser_i64<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text: String = Deserialize::deserialize(d)?;
    decode(&text).map_err(de::Error::custom)
}

// ---- requests ----

/// `RangeRequest` for one key.
#[derive(Debug, Serialize)]
pub(crate) struct RangeRequest<'a> {
    /// Base64 key.
    pub key: &'a str,
    /// Only metadata (the liveness probe does not need the value).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keys_only: bool,
}

/// `TxnRequest`: if `key`'s mod_revision equals `expected`, put `value`; else read `key`.
#[derive(Debug, Serialize)]
pub(crate) struct TxnRequest<'a> {
    compare: [Compare<'a>; 1],
    success: [PutOp<'a>; 1],
    failure: [RangeOp<'a>; 1],
}

impl<'a> TxnRequest<'a> {
    /// The compare-and-swap transaction (`expected` 0 means "the key does not exist").
    pub fn cas(key: &'a str, expected: i64, value: &'a str) -> Self {
        Self {
            compare: [Compare { key, target: "MOD", result: "EQUAL", mod_revision: expected }],
            success: [PutOp { request_put: PutRequest { key, value } }],
            failure: [RangeOp { request_range: RangeRequest { key, keys_only: false } }],
        }
    }
}

#[derive(Debug, Serialize)]
struct Compare<'a> {
    key: &'a str,
    target: &'static str,
    result: &'static str,
    #[serde(serialize_with = "ser_i64")]
    mod_revision: i64,
}

#[derive(Debug, Serialize)]
struct PutOp<'a> {
    request_put: PutRequest<'a>,
}

#[derive(Debug, Serialize)]
struct PutRequest<'a> {
    key: &'a str,
    value: &'a str,
}

#[derive(Debug, Serialize)]
struct RangeOp<'a> {
    request_range: RangeRequest<'a>,
}

/// `WatchRequest` with a `create_request` for one key from `start_revision`.
#[derive(Debug, Serialize)]
pub(crate) struct WatchCreate<'a> {
    create_request: WatchCreateRequest<'a>,
}

impl<'a> WatchCreate<'a> {
    /// Watch `key` from `start_revision` on.
    pub fn new(key: &'a str, start_revision: i64) -> Self {
        Self { create_request: WatchCreateRequest { key, start_revision } }
    }
}

#[derive(Debug, Serialize)]
struct WatchCreateRequest<'a> {
    key: &'a str,
    #[serde(serialize_with = "ser_i64")]
    start_revision: i64,
}

/// `AuthenticateRequest`.
#[derive(Serialize)]
pub(crate) struct AuthenticateRequest<'a> {
    /// User name.
    pub name: &'a str,
    /// Password.
    pub password: &'a str,
}

// ---- responses ----

/// `ResponseHeader`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    /// The store revision when the response was made.
    #[serde(default, deserialize_with = "de_i64")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyValue {
    /// Revision of the last modification (for a DELETE event: of the deletion).
    #[serde(default, deserialize_with = "de_i64")]
    pub mod_revision: i64,
    /// The value (absent in JSON when empty or `keys_only`).
    #[serde(default, deserialize_with = "de_bytes")]
    pub value: Vec<u8>,
}

/// `RangeResponse`.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    /// Header.
    #[serde(default)]
    pub header: Header,
    /// At most one key/value here (a single-key range).
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

/// `TxnResponse`.
#[derive(Debug, Deserialize)]
pub(crate) struct TxnResponse {
    /// Header; its revision is the put's revision when `succeeded`.
    #[serde(default)]
    pub header: Header,
    /// Whether the compare held (and the put happened).
    #[serde(default)]
    pub succeeded: bool,
    /// One response per operation of the branch taken.
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

/// `ResponseOp` (only the range arm is read).
#[derive(Debug, Deserialize)]
pub(crate) struct ResponseOp {
    /// The failure branch's range.
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
}

/// `AuthenticateResponse`.
#[derive(Deserialize)]
pub(crate) struct AuthenticateResponse {
    /// The token to send as `Authorization`.
    #[serde(default)]
    pub token: String,
}

/// A unary error body: `{"error": "...", "message": "...", "code": N}`.
#[derive(Debug, Deserialize)]
pub(crate) struct UnaryError {
    /// gRPC code.
    #[serde(default)]
    pub code: i32,
    /// etcd's message.
    #[serde(default)]
    pub message: String,
}

/// One line of the watch stream: `{"result": WatchResponse}` or `{"error": {...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchLine {
    /// A watch response.
    #[serde(default)]
    pub result: Option<WatchResponse>,
    /// The stream failed.
    #[serde(default)]
    pub error: Option<StreamError>,
}

/// A streaming error from the gateway.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamError {
    /// gRPC code.
    #[serde(default)]
    pub grpc_code: i32,
    /// Message.
    #[serde(default)]
    pub message: String,
}

/// `WatchResponse`.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchResponse {
    /// The create request was answered.
    #[serde(default)]
    pub created: bool,
    /// The watch was cancelled (refused at creation, or compacted).
    #[serde(default)]
    pub canceled: bool,
    /// Set when the start revision was compacted away: the oldest revision still kept.
    #[serde(default, deserialize_with = "de_i64")]
    pub compact_revision: i64,
    /// Why the watch was cancelled.
    #[serde(default)]
    pub cancel_reason: String,
    /// The changes, in revision order.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// `mvccpb.Event`.
#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    /// `PUT` (left out, as the enum's 0) or `DELETE`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The key/value after the change.
    pub kv: KeyValue,
}

impl Event {
    /// Whether this event deleted the key.
    pub fn is_delete(&self) -> bool {
        self.kind.as_deref() == Some("DELETE")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bodies as etcd 3.4.23 sent them.
    #[test]
    fn decodes_real_bodies() {
        let range: RangeResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(range.header.revision, 2);
        assert_eq!(range.kvs[0].mod_revision, 2);
        assert_eq!(range.kvs[0].value, b"bar");

        let empty: RangeResponse =
            serde_json::from_str(r#"{"header":{"revision":"7","raft_term":"2"}}"#).unwrap();
        assert!(empty.kvs.is_empty());

        let conflict: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"5"},"responses":[{"response_range":{"header":{"revision":"5"},"kvs":[{"key":"Zm9v","mod_revision":"5","value":"djM="}],"count":"1"}}]}"#,
        )
        .unwrap();
        assert!(!conflict.succeeded);
        let kv = &conflict.responses[0].response_range.as_ref().unwrap().kvs[0];
        assert_eq!((kv.mod_revision, kv.value.as_slice()), (5, &b"v3"[..]));

        let compacted: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"cluster_id":"1","raft_term":"2"},"canceled":true,"compact_revision":"4"}}"#,
        )
        .unwrap();
        let r = compacted.result.unwrap();
        assert!(r.canceled && r.compact_revision == 4 && !r.created);

        let deleted: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"9"}}]}}"#,
        )
        .unwrap();
        let ev = &deleted.result.unwrap().events[0];
        assert!(ev.is_delete() && ev.kv.value.is_empty() && ev.kv.mod_revision == 9);

        let err: UnaryError = serde_json::from_str(
            r#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#,
        )
        .unwrap();
        assert_eq!((err.code, err.message.as_str()), (16, "etcdserver: invalid auth token"));
    }

    #[test]
    fn encodes_the_cas_transaction() {
        let json = serde_json::to_string(&TxnRequest::cas("a2V5", 0, "dg==")).unwrap();
        assert_eq!(
            json,
            r#"{"compare":[{"key":"a2V5","target":"MOD","result":"EQUAL","mod_revision":"0"}],"success":[{"request_put":{"key":"a2V5","value":"dg=="}}],"failure":[{"request_range":{"key":"a2V5"}}]}"#
        );
        let watch = serde_json::to_string(&WatchCreate::new("a2V5", 12)).unwrap();
        assert_eq!(watch, r#"{"create_request":{"key":"a2V5","start_revision":"12"}}"#);
    }
}
