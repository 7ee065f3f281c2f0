//! The default transport: reqwest over rustls, for apps that do not bring their own HTTP
//! stack (the `reqwest-transport` feature).

use std::io::Read;
use std::time::Duration;

use super::transport::{
    CONNECT_TIMEOUT, Cut, HttpRequest, HttpResponse, STALL_TIMEOUT, Transport, TransportError,
};

/// The default transport: reqwest over rustls with the webpki roots, on a runtime of its own
/// (one worker thread; `send` blocks the calling thread until the answer is in). Not the
/// blocking client: its reads cannot time out, and a stalled link must be noticed. Clones
/// share the connection pool.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    base_url: String,
    client: reqwest::Client,
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
}

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

impl Transport for ReqwestTransport {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        self.send_keeping_partial(request).map_err(|cut| cut.error)
    }

    fn send_keeping_partial(&self, request: &HttpRequest) -> Result<HttpResponse, Cut> {
        let builder = self.builder(request)?;
        self.runtime.block_on(async move {
            // Without the URL: it is not personal, but errors should not depend on deployment details.
            let mut response = builder
                .send()
                .await
                .map_err(|e| cut(format!("request failed: {}", describe(e)), None))?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(piece)) => body.extend_from_slice(&piece),
                    Ok(None) => return Ok(HttpResponse { status, body }),
                    Err(e) => {
                        let message = format!("reading the response failed: {}", describe(e));
                        return Err(cut(message, Some(HttpResponse { status, body })));
                    }
                }
            }
        })
    }

    /// hyper reads the answer while it is still writing the body.
    fn reads_while_sending(&self) -> bool {
        true
    }

    fn send_streaming(
        &self,
        request: &HttpRequest,
        receive: &mut dyn FnMut(u16, &mut dyn Read),
    ) -> Result<(), Cut> {
        let builder = self.builder(request)?;
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(PIECES_AHEAD);
        // The runtime's thread receives while the caller's applies what came before.
        let download = self.runtime.spawn(async move {
            let mut response = match builder.send().await {
                Ok(r) => r,
                Err(e) => {
                    let _ = head_tx.send(Err(format!("request failed: {}", describe(e))));
                    return;
                }
            };
            if head_tx.send(Ok(response.status().as_u16())).is_err() {
                return;
            }
            loop {
                let piece = match response.chunk().await {
                    Ok(Some(piece)) => Ok(piece),
                    Ok(None) => return,
                    Err(e) => Err(format!("reading the response failed: {}", describe(e))),
                };
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
        });
        let status = match head_rx.blocking_recv() {
            Ok(Ok(status)) => status,
            Ok(Err(message)) => return Err(cut(message, None)),
            Err(_) => return Err(cut("the HTTP client stopped".into(), None)),
        };
        let mut body = Arriving {
            rx,
            current: bytes::Bytes::new(),
        };
        receive(status, &mut body);
        // What the engine did not read is not wanted (it stopped at the feed's end or failed).
        download.abort();
        Ok(())
    }
}

impl ReqwestTransport {
    fn builder(&self, request: &HttpRequest) -> Result<reqwest::RequestBuilder, Cut> {
        let url = format!("{}{}", self.base_url, request.path);
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| cut("invalid HTTP method".into(), None))?;
        let mut builder = self.client.request(method, &url).body(request.body.clone());
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        Ok(builder)
    }
}

fn cut(message: String, partial: Option<HttpResponse>) -> Cut {
    Cut {
        error: TransportError { message },
        partial,
    }
}

/// Pieces of a streamed answer received ahead of the engine: enough to keep the link busy
/// while a page is applied, few enough that a phone's memory holds a page, not the answer.
const PIECES_AHEAD: usize = 16;

/// The body of a streamed answer as the runtime's thread receives it.
struct Arriving {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
}

impl Read for Arriving {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(message)) => return Err(std::io::Error::other(message)),
                None => return Ok(0),
            }
        }
        let piece = self.current.split_to(buf.len().min(self.current.len()));
        for (to, from) in buf.iter_mut().zip(piece.iter()) {
            *to = *from;
        }
        Ok(piece.len())
    }
}

/// A transport failure in words, without the URL; a stall says it is one.
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
