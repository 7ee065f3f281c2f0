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

/// The default transport: reqwest's blocking client over rustls with the webpki roots.
#[cfg(feature = "reqwest-transport")]
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    base_url: String,
    client: reqwest::blocking::Client,
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
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(120));
        if let Some(root) = root {
            builder = builder.add_root_certificate(root);
        }
        let client = builder.build().map_err(|e| TransportError {
            message: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            client,
        })
    }
}

#[cfg(feature = "reqwest-transport")]
impl Transport for ReqwestTransport {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let url = format!("{}{}", self.base_url, request.path);
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| TransportError {
                message: "invalid HTTP method".into(),
            })?;
        let mut builder = self.client.request(method, &url).body(request.body.clone());
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        // Without the URL: it is not personal, but errors should not depend on deployment details.
        let response = builder.send().map_err(|e| TransportError {
            message: format!("request failed: {}", e.without_url()),
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().map_err(|e| TransportError {
            message: format!("reading the response failed: {}", e.without_url()),
        })?;
        Ok(HttpResponse {
            status,
            body: body.to_vec(),
        })
    }
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
