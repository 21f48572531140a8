//! The data plane's one error type: what failed ([`ErrorKind`]), on which side
//! ([`Side`]), whether the request may be retried, and the one table ([`ErrorKind::mapping`])
//! from a kind to the HTTP status, the contract's error code, the metric label and the log
//! field. Every error answered to a client is built here, so a code is spelled once.

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
}

/// How one kind of error is answered and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub status: u16,
    /// The contract's `error.code`.
    pub code: &'static str,
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
        let (status, code, label, side) = match self {
            HeadTooLarge => (
                431,
                "RequestHeaderFieldsTooLarge",
                "head_too_large",
                Downstream,
            ),
            TooManyHeaders => (
                431,
                "RequestHeaderFieldsTooLarge",
                "too_many_headers",
                Downstream,
            ),
            MalformedRequest => (400, "BadRequest", "malformed_request", Downstream),
            RequestHeadTimeout => (408, "RequestTimeout", "request_head_timeout", Downstream),
            RequestBodyFailed => (400, "BadRequest", "request_body_failed", Downstream),
            NoRoute => (404, "NotFound", "no_route", Downstream),
            NotConfigured => (503, "StoreUnavailable", "not_configured", Internal),
            BackendUnusable => (
                502,
                "BackendConnectionFailure",
                "backend_unusable",
                Internal,
            ),
            BackendUnreachable => (
                502,
                "BackendConnectionFailure",
                "backend_unreachable",
                Upstream,
            ),
            ConnectTimeout => (504, "BackendTimeout", "connect_timeout", Upstream),
            BackendTls(_) => (500, "BackendTlsError", "backend_tls", Upstream),
            HeadSendFailed => (
                502,
                "BackendConnectionFailure",
                "head_send_failed",
                Upstream,
            ),
            BodySendFailed => (
                502,
                "BackendConnectionFailure",
                "body_send_failed",
                Upstream,
            ),
            ClosedWithoutAnswer => (
                502,
                "BackendConnectionFailure",
                "closed_without_answer",
                Upstream,
            ),
            ReadFailed => (502, "BackendConnectionFailure", "read_failed", Upstream),
            ResponseTimeout => (504, "BackendTimeout", "response_timeout", Upstream),
            InvalidResponse => (502, "BackendProtocolError", "invalid_response", Upstream),
        };
        Mapping {
            status,
            code,
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

    /// The contract's `details[].reason` (TLS failures only).
    pub fn reason(self) -> Option<TlsFailure> {
        match self {
            ErrorKind::BackendTls(reason) => Some(reason),
            _ => None,
        }
    }
}

/// An error answered to the client as contract JSON.
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    /// One sentence for a person (no secret: names ids, addresses and reasons only).
    pub message: String,
    /// The request body was not read to its end: the connection cannot carry another request.
    pub close: bool,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            close: false,
        }
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

    /// The contract's JSON error body.
    pub fn body(&self) -> Vec<u8> {
        let details: Vec<serde_json::Value> = self
            .kind
            .reason()
            .map(|r| vec![serde_json::json!({ "reason": r.as_str() })])
            .unwrap_or_default();
        let body = serde_json::json!({
            "error": { "code": self.kind.mapping().code, "message": self.message, "details": details }
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
        let e = ProxyError::new(ErrorKind::BackendTls(TlsFailure::UntrustedChain), "x");
        assert_eq!(e.status(), 500);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "BackendTlsError");
        assert_eq!(v["error"]["message"], "x");
        assert_eq!(v["error"]["details"][0]["reason"], "UntrustedChain");
        let e = ProxyError::new(ErrorKind::NoRoute, "y");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
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
            RequestHeadTimeout,
            RequestBodyFailed,
            NoRoute,
            NotConfigured,
            BackendUnusable,
            BackendUnreachable,
            ConnectTimeout,
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
