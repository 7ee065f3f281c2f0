//! Transports carry the engine's bytes. The default is reqwest with rustls; a host app may
//! implement [`Transport`] itself (OkHttp on Android, URLSession on iOS).

use std::time::Duration;

/// One HTTP request the engine wants sent. `path` is relative to the server's base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A request that got no HTTP answer (no network, timeout, connection cut).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub message: String,
}

pub trait Transport: Send + Sync {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError>;

    /// As [`Transport::send`], and when the answer is cut inside its body, what of it arrived
    /// (a streamed answer's whole messages are usable: `zoufang_protocol::stream`). A transport
    /// that cannot tell keeps the default: a cut answer is no answer.
    fn send_keeping_partial(&self, request: &HttpRequest) -> Result<HttpResponse, Cut> {
        self.send(request).map_err(|error| Cut {
            error,
            partial: None,
        })
    }
}

/// A request whose answer did not arrive whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub error: TransportError,
    /// The status and the body bytes that came before the cut, if the answer had begun.
    pub partial: Option<HttpResponse>,
}

/// How the driver retries a request that failed for reasons that may pass: no answer, HTTP
/// 5xx or 429. Delays grow exponentially with full jitter, so devices coming back into
/// coverage together do not hammer the server in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let ceiling = exp.min(self.cap);
        let millis = ceiling.as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// Silence after which the default transport gives a request up as stalled (the engine then
/// tries again on a new connection).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the default transport waits for a connection (a 2G handshake takes a second or two).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default transport: reqwest over rustls with the webpki roots, on a runtime of its own
/// (one worker thread; `send` blocks the calling thread until the answer is in). Not the
/// blocking client: its reads cannot time out, and a stalled link must be noticed. Clones
/// share the connection pool.
#[cfg(feature = "reqwest-transport")]
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    base_url: String,
    client: reqwest::Client,
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
}

#[cfg(feature = "reqwest-transport")]
impl ReqwestTransport {
    /// A client that trusts the public web PKI (webpki roots).
    pub fn new(base_url: &str) -> Result<Self, TransportError> {
        Self::build(base_url, None)
    }

    /// A client that also trusts `pem` — the root of a provincial private CA, for instance, or a
    /// test server's self-signed certificate.
    pub fn with_root_certificate(base_url: &str, pem: &[u8]) -> Result<Self, TransportError> {
        let roots = reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default();
        let mut roots = roots.into_iter();
        let (Some(root), None) = (roots.next(), roots.next()) else {
            return Err(TransportError {
                message: "the root certificate must be one PEM certificate".into(),
            });
        };
        Self::build(base_url, Some(root))
    }

    fn build(base_url: &str, root: Option<reqwest::Certificate>) -> Result<Self, TransportError> {
        let failed = |e: &dyn std::fmt::Display| TransportError {
            message: format!("cannot build the HTTP client: {e}"),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zoufang-http")
            .enable_all()
            .build()
            .map_err(|e| failed(&e))?;
        // A link that stops moving bytes without closing is noticed by the read timeout (it
        // restarts at every byte read), not by a total timeout: a slow answer that keeps coming
        // is fine, silence is not. The total bound only guards against a peer that trickles.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(STALL_TIMEOUT)
            .timeout(Duration::from_secs(600));
        if let Some(root) = root {
            builder = builder.add_root_certificate(root);
        }
        let client = builder.build().map_err(|e| failed(&e))?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            client,
            runtime: std::sync::Arc::new(runtime),
        })
    }
}

#[cfg(feature = "reqwest-transport")]
impl Transport for ReqwestTransport {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        self.send_keeping_partial(request).map_err(|cut| cut.error)
    }

    fn send_keeping_partial(&self, request: &HttpRequest) -> Result<HttpResponse, Cut> {
        let url = format!("{}{}", self.base_url, request.path);
        let failed = |message: String, partial: Option<HttpResponse>| Cut {
            error: TransportError { message },
            partial,
        };
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| failed("invalid HTTP method".into(), None))?;
        let mut builder = self.client.request(method, &url).body(request.body.clone());
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        self.runtime.block_on(async move {
            // Without the URL: it is not personal, but errors should not depend on deployment details.
            let mut response = builder
                .send()
                .await
                .map_err(|e| failed(format!("request failed: {}", describe(e)), None))?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(piece)) => body.extend_from_slice(&piece),
                    Ok(None) => return Ok(HttpResponse { status, body }),
                    Err(e) => {
                        let message = format!("reading the response failed: {}", describe(e));
                        return Err(failed(message, Some(HttpResponse { status, body })));
                    }
                }
            }
        })
    }
}

/// A transport failure in words, without the URL; a stall says it is one.
#[cfg(feature = "reqwest-transport")]
fn describe(e: reqwest::Error) -> String {
    if e.is_connect() {
        return "cannot connect to the server".into();
    }
    if e.is_timeout() {
        let secs = STALL_TIMEOUT.as_secs();
        return format!("the link went silent for {secs} s (stalled)");
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        for attempt in 1..=20 {
            let d = p.delay(attempt);
            let ceiling = Duration::from_millis(100 * (1u64 << (attempt - 1).min(16)))
                .min(Duration::from_secs(2));
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
        }
    }
}
