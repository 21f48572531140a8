//! The data plane's one error type: what failed ([`ErrorKind`]), on which side
//! ([`Side`]), whether the request may be retried, and the one table ([`ErrorKind::mapping`])
//! from a kind to the HTTP status, the contract's error code, the metric label, the log
//! field and the sentence the client reads. Every error answered to a client is built here,
//! so a code is spelled once.
//!
//! A client gets the code, a generic sentence and the request id, never an address, a host
//! name or an errno: those are in the error's `detail`, which goes to the log and to the
//! operators' lookup by request id (`GET /requests/{id}` on the admin API).

use crate::model::client_rule::ClientCertificateFailure;
use crate::tls::client::TlsFailure;

/// Which side of the proxy failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client: its request was bad, incomplete or late.
    Downstream,
    /// The backend: unreachable, slow, its TLS or its answer failed.
    Upstream,
    /// The gateway itself (its configuration or its own state).
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// What failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request head is larger than `MAX_HEAD_BYTES`.
    HeadTooLarge,
    /// The request has more than `MAX_HEADERS` fields.
    TooManyHeaders,
    /// The request is not valid HTTP/1.1 (head, framing or target).
    MalformedRequest,
    /// The request target is not a path edgegw forwards (see `dataplane::path`).
    InvalidPath,
    /// The path, once its dot segments are resolved, leaves the API it named.
    PathOutsideApi,
    /// The request uses a transfer coding other than `chunked`.
    UnsupportedTransferCoding,
    /// The request body is larger than `listener.max_request_body_bytes`.
    BodyTooLarge,
    /// The request body did not keep up `listener.body_timeout` / `body_min_rate`.
    RequestBodyTimeout,
    /// The request head did not arrive within the header timeout.
    RequestHeadTimeout,
    /// The request body failed or ended early.
    RequestBodyFailed,
    /// No API matches the path.
    NoRoute,
    /// The gateway has no configuration yet (a fleet node started while etcd was down,
    /// without a local copy): every path answers 503 until it has one.
    NotConfigured,
    /// The backend's address could not be resolved or its TLS context built.
    BackendUnusable,
    /// The TCP connection to the backend failed.
    BackendUnreachable,
    /// The backend did not accept a connection in time.
    ConnectTimeout,
    /// `upstream.max_connections_per_backend` requests were in flight for the whole
    /// `connect_timeout`.
    BackendBusy,
    /// The TLS connection to the backend failed, for this reason.
    BackendTls(TlsFailure),
    /// Writing the request head to the backend failed: it has no complete request.
    HeadSendFailed,
    /// Writing the request body to the backend failed.
    BodySendFailed,
    /// The backend closed the connection without answering.
    ClosedWithoutAnswer,
    /// Reading the backend's answer failed.
    ReadFailed,
    /// The backend did not answer within `upstream.request_timeout`.
    ResponseTimeout,
    /// The backend's response head or framing is invalid.
    InvalidResponse,
    /// The caller's certificate failed the API's `<validate-client-certificate>`.
    ClientCertificateInvalid(ClientCertificateFailure),
}

/// How one kind of error is answered and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub status: u16,
    /// The contract's `error.code`.
    pub code: &'static str,
    /// The `error.message` the client reads: generic, the same for every request.
    pub message: &'static str,
    /// The `kind` label of `edgegw_proxy_errors_total` and the `error` field of the logs.
    pub label: &'static str,
    pub side: Side,
}

impl Mapping {
    /// The labels this error is counted under in `edgegw_proxy_errors_total`.
    pub fn metric_labels(self) -> crate::metrics::ProxyErrorLabels {
        crate::metrics::ProxyErrorLabels {
            kind: self.label,
            side: self.side.as_str(),
        }
    }
}

impl ErrorKind {
    /// The one table of the data plane's errors (contract §4).
    pub fn mapping(self) -> Mapping {
        use ErrorKind::*;
        use Side::*;
        let (status, code, label, side, message) = match self {
            HeadTooLarge => (
                431,
                "RequestHeaderFieldsTooLarge",
                "head_too_large",
                Downstream,
                "The request head is too large.",
            ),
            TooManyHeaders => (
                431,
                "RequestHeaderFieldsTooLarge",
                "too_many_headers",
                Downstream,
                "The request has too many header fields.",
            ),
            MalformedRequest => (
                400,
                "BadRequest",
                "malformed_request",
                Downstream,
                "The request is not valid HTTP/1.1.",
            ),
            InvalidPath => (
                400,
                "BadRequest",
                "invalid_path",
                Downstream,
                "The request target is not a valid path.",
            ),
            PathOutsideApi => (
                400,
                "BadRequest",
                "path_outside_api",
                Downstream,
                "The request path leaves the API it names.",
            ),
            UnsupportedTransferCoding => (
                501,
                "NotImplemented",
                "unsupported_transfer_coding",
                Downstream,
                "Only the chunked transfer coding is supported.",
            ),
            BodyTooLarge => (
                413,
                "PayloadTooLarge",
                "body_too_large",
                Downstream,
                "The request body is too large.",
            ),
            RequestHeadTimeout => (
                408,
                "RequestTimeout",
                "request_head_timeout",
                Downstream,
                "The request head did not arrive in time.",
            ),
            RequestBodyTimeout => (
                408,
                "RequestTimeout",
                "request_body_timeout",
                Downstream,
                "The request body did not arrive in time.",
            ),
            RequestBodyFailed => (
                400,
                "BadRequest",
                "request_body_failed",
                Downstream,
                "The request body is incomplete or invalid.",
            ),
            NoRoute => (
                404,
                "NotFound",
                "no_route",
                Downstream,
                "No API matches the request path.",
            ),
            NotConfigured => (
                503,
                "StoreUnavailable",
                "not_configured",
                Internal,
                "This gateway has no configuration yet. Retry later.",
            ),
            BackendUnusable => (
                502,
                "BackendConnectionFailure",
                "backend_unusable",
                Internal,
                "The backend cannot be reached.",
            ),
            BackendUnreachable => (
                502,
                "BackendConnectionFailure",
                "backend_unreachable",
                Upstream,
                "The backend cannot be reached.",
            ),
            ConnectTimeout => (
                504,
                "BackendTimeout",
                "connect_timeout",
                Upstream,
                "The backend did not accept a connection in time.",
            ),
            BackendBusy => (
                504,
                "BackendTimeout",
                "backend_busy",
                Upstream,
                "The backend has too many requests in flight.",
            ),
            BackendTls(_) => (
                500,
                "BackendTlsError",
                "backend_tls",
                Upstream,
                "The TLS connection to the backend failed.",
            ),
            HeadSendFailed => (
                502,
                "BackendConnectionFailure",
                "head_send_failed",
                Upstream,
                "Sending the request to the backend failed.",
            ),
            BodySendFailed => (
                502,
                "BackendConnectionFailure",
                "body_send_failed",
                Upstream,
                "Sending the request body to the backend failed.",
            ),
            ClosedWithoutAnswer => (
                502,
                "BackendConnectionFailure",
                "closed_without_answer",
                Upstream,
                "The backend closed the connection without answering.",
            ),
            ReadFailed => (
                502,
                "BackendConnectionFailure",
                "read_failed",
                Upstream,
                "Reading the backend's answer failed.",
            ),
            ResponseTimeout => (
                504,
                "BackendTimeout",
                "response_timeout",
                Upstream,
                "The backend did not answer in time.",
            ),
            InvalidResponse => (
                502,
                "BackendProtocolError",
                "invalid_response",
                Upstream,
                "The backend sent an invalid response.",
            ),
            ClientCertificateInvalid(_) => (
                403,
                "ClientCertificateInvalid",
                "client_certificate_invalid",
                Downstream,
                "The client certificate does not satisfy this API's policy.",
            ),
        };
        Mapping {
            status,
            code,
            message,
            label,
            side,
        }
    }

    /// Whether the request can be sent again on another connection: only when the backend
    /// cannot have acted on it (no connection, or not even its head arrived whole).
    pub fn retry_safe(self) -> bool {
        matches!(
            self,
            ErrorKind::BackendUnreachable
                | ErrorKind::ConnectTimeout
                | ErrorKind::BackendTls(_)
                | ErrorKind::HeadSendFailed
        )
    }

    /// The contract's `details[].reason`: why the backend's TLS or the caller's
    /// certificate failed; none for other kinds.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            ErrorKind::BackendTls(reason) => Some(reason.as_str()),
            ErrorKind::ClientCertificateInvalid(reason) => Some(reason.as_str()),
            _ => None,
        }
    }
}

/// An error answered to the client as contract JSON.
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    /// What exactly failed, for operators (log and lookup by request id, never the
    /// client): may name backends, addresses and OS errors; never a secret.
    pub detail: String,
    /// The request body was not read to its end: the connection cannot carry another request.
    pub close: bool,
    /// A reused upstream connection failed before a byte of the answer came: the backend
    /// had closed it (a race with its keep-alive timeout), so the request never reached
    /// it and a replayable one may go again on a new connection.
    pub stale_connection: bool,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            close: false,
            stale_connection: false,
        }
    }

    /// The same error, marked as one of a connection the backend had already closed.
    #[must_use]
    pub fn on_stale_connection(mut self) -> Self {
        self.stale_connection = true;
        self
    }

    /// The same error, and the client connection must close after it.
    #[must_use]
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.mapping().status
    }

    /// The contract's JSON error body, with the request id (an addition of 0.3.0) that
    /// finds the detail in the log and on the admin API.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        let details: Vec<serde_json::Value> = self
            .kind
            .reason()
            .map(|r| vec![serde_json::json!({ "reason": r })])
            .unwrap_or_default();
        let mapping = self.kind.mapping();
        let body = serde_json::json!({
            "error": {
                "code": mapping.code,
                "message": mapping.message,
                "details": details,
                "requestId": request_id,
            }
        });
        body.to_string().into_bytes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_contract_shape() {
        let e = ProxyError::new(
            ErrorKind::BackendTls(TlsFailure::UntrustedChain),
            "backend be1 at 10.0.0.7:443: certificate verify failed (os error 0)",
        );
        assert_eq!(e.status(), 500);
        let v: serde_json::Value = serde_json::from_slice(&e.body("r-1")).unwrap();
        assert_eq!(v["error"]["code"], "BackendTlsError");
        assert_eq!(v["error"]["requestId"], "r-1");
        assert_eq!(v["error"]["details"][0]["reason"], "UntrustedChain");
        // The detail never reaches the client.
        let text = String::from_utf8(e.body("r-1")).unwrap();
        assert!(!text.contains("10.0.0.7") && !text.contains("be1") && !text.contains("os error"));
        let e = ProxyError::new(ErrorKind::NoRoute, "y");
        let v: serde_json::Value = serde_json::from_slice(&e.body("r-2")).unwrap();
        assert_eq!(v["error"]["code"], "NotFound");
        assert_eq!(v["error"]["details"], serde_json::json!([]));
    }

    #[test]
    fn contract_statuses_and_codes() {
        use ErrorKind::*;
        let cases = [
            (NoRoute, 404, "NotFound"),
            (NotConfigured, 503, "StoreUnavailable"),
            (BackendUnreachable, 502, "BackendConnectionFailure"),
            (ClosedWithoutAnswer, 502, "BackendConnectionFailure"),
            (ConnectTimeout, 504, "BackendTimeout"),
            (ResponseTimeout, 504, "BackendTimeout"),
            (
                BackendTls(TlsFailure::HandshakeFailed),
                500,
                "BackendTlsError",
            ),
            (HeadTooLarge, 431, "RequestHeaderFieldsTooLarge"),
            (RequestHeadTimeout, 408, "RequestTimeout"),
        ];
        for (kind, status, code) in cases {
            let m = kind.mapping();
            assert_eq!((m.status, m.code), (status, code), "{kind:?}");
        }
        // Labels name one kind each (they are metric label values and log fields).
        let all = [
            HeadTooLarge,
            TooManyHeaders,
            MalformedRequest,
            InvalidPath,
            PathOutsideApi,
            UnsupportedTransferCoding,
            BodyTooLarge,
            RequestHeadTimeout,
            RequestBodyTimeout,
            RequestBodyFailed,
            NoRoute,
            NotConfigured,
            BackendUnusable,
            BackendUnreachable,
            ConnectTimeout,
            BackendBusy,
            BackendTls(TlsFailure::Expired),
            HeadSendFailed,
            BodySendFailed,
            ClosedWithoutAnswer,
            ReadFailed,
            ResponseTimeout,
            InvalidResponse,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|k| k.mapping().label).collect();
        assert_eq!(labels.len(), all.len());
        assert!(!BodySendFailed.retry_safe() && !ReadFailed.retry_safe());
        assert!(HeadSendFailed.retry_safe() && BackendUnreachable.retry_safe());
    }
}
