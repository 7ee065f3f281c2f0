//! Transports carry the engine's bytes. The default is reqwest with rustls; a host app may
//! implement [`Transport`] itself (OkHttp on Android, URLSession on iOS).

use std::io::Read;
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

    /// Whether [`Transport::send_streaming`] hands the answer over while the request's body is
    /// still being sent (HTTP/1.1 allows it; many clients read only once they have sent
    /// everything). Then the server acknowledges a streamed push message by message as it
    /// applies it, and a cut costs only what had not been acknowledged. The default: no.
    fn reads_while_sending(&self) -> bool {
        false
    }

    /// Sends, and hands the answer to `receive` as it arrives: its status and a reader of its
    /// body that yields bytes as they come and fails (an I/O error) where the link cut it, so
    /// the engine applies a streamed answer's messages while the rest is still on its way.
    /// `Err` only when no answer began. The default reads the whole answer first
    /// ([`Transport::send_keeping_partial`]): correct for any transport, without the overlap.
    fn send_streaming(
        &self,
        request: &HttpRequest,
        receive: &mut dyn FnMut(u16, &mut dyn Read),
    ) -> Result<(), Cut> {
        match self.send_keeping_partial(request) {
            Ok(answer) => receive(answer.status, &mut answer.body.as_slice()),
            Err(Cut {
                error,
                partial: Some(partial),
            }) => {
                let mut body = CutAfter {
                    arrived: &partial.body,
                    reason: &error.message,
                };
                receive(partial.status, &mut body);
            }
            Err(cut) => return Err(cut),
        }
        Ok(())
    }
}

/// A body that fails where the link cut it, after the bytes that had arrived.
struct CutAfter<'a> {
    arrived: &'a [u8],
    reason: &'a str,
}

impl Read for CutAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.arrived.is_empty() && !buf.is_empty() {
            return Err(std::io::Error::other(self.reason.to_owned()));
        }
        self.arrived.read(buf)
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
