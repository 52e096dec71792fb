//! Unary calls to the gateway: one kept-alive connection, failover to the next endpoint, the
//! auth token (fetched on first use, fetched again when etcd rejects it), all inside the
//! caller's deadline. Runs on the `lb-store` thread; the client and each watch own a channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::{Endpoint, Limits, Timeouts};
use crate::error::{Error, grpc_code};
use crate::status::StatusHandle;
use crate::transport::{self, Connector, Sender};
use crate::wire;

/// What every channel and watch of one client shares.
pub(crate) struct Shared {
    /// Parsed endpoints, in configured order.
    pub endpoints: Vec<Endpoint>,
    /// Opens connections (TLS configuration inside).
    pub connector: Connector,
    /// Timing.
    pub timeouts: Timeouts,
    /// Bounds.
    pub limits: Limits,
    /// The state key, `<prefix>/state`.
    pub key: String,
    /// The state key in base64, as the gateway wants it.
    pub key_b64: String,
    /// User name and password, when etcd auth is used.
    pub credentials: Option<(String, String)>,
    /// The current token state, shared so one refresh serves every channel.
    pub token: Mutex<Token>,
    /// Index of the endpoint to use next; moves on after a failure.
    pub preferred: AtomicUsize,
    /// Connection status for operators.
    pub status: StatusHandle,
}

/// Where authentication stands.
#[derive(Debug, Clone, Default)]
pub(crate) enum Token {
    /// Not fetched yet (or rejected since).
    #[default]
    Unknown,
    /// etcd has auth disabled: calls go without a token until etcd asks for one.
    NotNeeded,
    /// The token to send.
    Valid(Arc<str>),
}

impl Shared {
    /// The endpoint to use now and its index.
    pub fn endpoint(&self) -> (usize, &Endpoint) {
        let i = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        (i, &self.endpoints[i])
    }

    /// After a failure on endpoint `failed`, moves on to the next one (once, however many
    /// channels saw the same failure).
    pub fn rotate(&self, failed: usize) {
        let next = (failed + 1) % self.endpoints.len();
        let _ = self.preferred.compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn token(&self) -> Token {
        self.token.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_token(&self, token: Token) {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// Forgets `rejected` (unless another channel already replaced it).
    pub fn reject_token(&self, rejected: Option<&Arc<str>>) {
        let mut token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        let same = match (&*token, rejected) {
            (Token::Valid(current), Some(rejected)) => Arc::ptr_eq(current, rejected),
            (Token::NotNeeded, None) => true,
            _ => false,
        };
        if same {
            *token = Token::Unknown;
        }
    }
}

/// A connection slot plus the logic around it.
pub(crate) struct Channel {
    shared: Arc<Shared>,
    conn: Option<(usize, Sender)>,
}

/// Whether a request may be sent again after it may have reached etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and authentication: repeat on another endpoint.
    Idempotent,
    /// Writes: never repeated once sent; the caller resolves the ambiguity.
    Once,
}

impl Channel {
    /// A channel with no connection yet.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, conn: None }
    }

    /// POSTs `body` to `path`, authenticated, before `deadline`; returns the response body.
    pub async fn call(
        &mut self,
        op: &'static str,
        path: &'static str,
        body: Bytes,
        deadline: Instant,
        retry: Retry,
    ) -> Result<Bytes, Error> {
        let after = self.shared.timeouts.request;
        let call = async {
            let mut refreshed = false;
            loop {
                let token = self.token(deadline).await?;
                match self.send(op, path, body.clone(), token.as_deref(), retry).await {
                    Err(e)
                        if e.is_token_rejected()
                            && !refreshed
                            && self.shared.credentials.is_some() =>
                    {
                        self.shared.reject_token(token.as_ref());
                        refreshed = true;
                    }
                    result => return result,
                }
            }
        };
        let result = tokio::time::timeout_at(deadline, call)
            .await
            .unwrap_or(Err(Error::Timeout { op, after }));
        match &result {
            Ok(_) => self.shared.status.contact(),
            Err(e) => self.shared.status.failed(e, matches!(e, Error::Etcd { .. })),
        }
        result
    }

    /// The token to send: `None` without credentials or while etcd has auth disabled.
    pub async fn token(&mut self, deadline: Instant) -> Result<Option<Arc<str>>, Error> {
        let shared = self.shared.clone();
        let Some((name, password)) = &shared.credentials else {
            return Ok(None);
        };
        match self.shared.token() {
            Token::Valid(token) => return Ok(Some(token)),
            Token::NotNeeded => return Ok(None),
            Token::Unknown => {}
        }
        let request = wire::AuthenticateRequest { name, password };
        let body =
            Bytes::from(serde_json::to_vec(&request).map_err(|e| protocol("authenticate", e))?);
        let answer = tokio::time::timeout_at(
            deadline,
            self.send("authenticate", wire::AUTHENTICATE, body, None, Retry::Idempotent),
        )
        .await
        .unwrap_or(Err(Error::Timeout { op: "authenticate", after: self.shared.timeouts.request }));
        match answer {
            Ok(body) => {
                let answer: wire::AuthenticateResponse =
                    serde_json::from_slice(&body).map_err(|e| protocol("authenticate", e))?;
                if answer.token.is_empty() {
                    return Err(Error::Protocol { op: "authenticate", reason: "no token".into() });
                }
                let token: Arc<str> = answer.token.into();
                self.shared.set_token(Token::Valid(token.clone()));
                Ok(Some(token))
            }
            Err(Error::Etcd { code: grpc_code::FAILED_PRECONDITION, message, .. })
                if message.contains("authentication is not enabled") =>
            {
                self.shared.set_token(Token::NotNeeded);
                Ok(None)
            }
            Err(Error::Etcd { message, .. }) if message.contains("authentication failed") => {
                Err(Error::Auth(message))
            }
            Err(e) => Err(e),
        }
    }

    /// One request, failing over across endpoints while that is safe. Each endpoint is tried
    /// once; a kept-alive connection that turns out closed (etcd restarted while it was idle)
    /// costs no attempt, once per call.
    async fn send(
        &mut self,
        op: &'static str,
        path: &'static str,
        body: Bytes,
        token: Option<&str>,
        retry: Retry,
    ) -> Result<Bytes, Error> {
        let mut last = None;
        let mut attempts = 0;
        let mut stale_allowance = true;
        while attempts < self.shared.endpoints.len() {
            // Taken out for the duration: a call cancelled half-way leaves no half-used
            // connection behind.
            let kept = self.conn.take().filter(|(_, sender)| !sender.is_closed());
            let reused = kept.is_some();
            let (index, mut sender) = match kept {
                Some(conn) => conn,
                None => {
                    let (index, endpoint) = self.shared.endpoint();
                    match self.shared.connector.connect(endpoint).await {
                        Ok(sender) => (index, sender),
                        Err(e) => {
                            attempts += 1;
                            self.shared.rotate(index);
                            last = Some(e);
                            continue;
                        }
                    }
                }
            };
            let endpoint = &self.shared.endpoints[index];
            let sent = async {
                sender.ready().await.map_err(|e| (false, transport::transport(endpoint, &e)))?;
                let request =
                    transport::post(endpoint, path, token, body.clone()).map_err(|e| (false, e))?;
                let mut response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| (true, transport::transport(endpoint, &e)))?;
                let status = response.status();
                let limit = self.shared.limits.max_response_bytes;
                let bytes = transport::read_body(response.body_mut(), limit, endpoint)
                    .await
                    .map_err(|e| (true, e))?;
                Ok::<_, (bool, Error)>((status, bytes))
            }
            .await;
            let (status, bytes) = match sent {
                Ok(answer) => answer,
                Err((_, e @ (Error::TooLarge { .. } | Error::Protocol { .. }))) => return Err(e),
                Err((may_have_arrived, e)) => {
                    if may_have_arrived && retry == Retry::Once {
                        self.shared.rotate(index);
                        return Err(e);
                    }
                    if reused && stale_allowance {
                        stale_allowance = false;
                        continue;
                    }
                    attempts += 1;
                    self.shared.rotate(index);
                    last = Some(e);
                    continue;
                }
            };
            self.conn = Some((index, sender));
            if status.is_success() {
                return Ok(bytes);
            }
            let error = match serde_json::from_slice::<wire::UnaryError>(&bytes) {
                Ok(e) => Error::Etcd { op, code: e.code, message: e.message },
                Err(_) => protocol(op, http_status(status)),
            };
            // A member cut off from the quorum answers Unavailable: another one may not.
            let elsewhere = matches!(error, Error::Etcd { code: grpc_code::UNAVAILABLE, .. })
                && retry == Retry::Idempotent;
            if !elsewhere {
                return Err(error);
            }
            attempts += 1;
            self.shared.rotate(index);
            self.conn = None;
            last = Some(error);
        }
        Err(last.unwrap_or_else(|| Error::Config("no etcd endpoint".into())))
    }

    /// A linearizable read of the state key (`keys_only` leaves the value out).
    pub async fn range(
        &mut self,
        op: &'static str,
        deadline: Instant,
        keys_only: bool,
    ) -> Result<wire::RangeResponse, Error> {
        let request = wire::RangeRequest { key: &self.shared.key_b64, keys_only };
        let body = Bytes::from(serde_json::to_vec(&request).map_err(|e| protocol(op, e))?);
        let bytes = self.call(op, wire::RANGE, body, deadline, Retry::Idempotent).await?;
        serde_json::from_slice(&bytes).map_err(|e| protocol(op, e))
    }
}

/// An HTTP error status without etcd's error body.
pub(crate) fn http_status(status: http::StatusCode) -> String {
    if status == http::StatusCode::NOT_FOUND {
        format!("HTTP status {status}: is this etcd 3.4 or later (the /v3 JSON gateway)?")
    } else {
        format!("HTTP status {status}")
    }
}

/// An answer that did not parse.
pub(crate) fn protocol(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Protocol { op, reason: e.to_string() }
}
