//! Message streams: several messages in one body, each usable as soon as it has arrived.
//!
//! A stream is one zstd stream over newline-delimited JSON (compact JSON never holds a raw
//! newline), flushed after every message: whatever prefix of the body arrived decodes to the
//! messages it holds whole, so a cut link costs the message in flight, not the request, and the
//! messages share one compression window (a stream of twenty pages compresses as one body,
//! not as twenty). A plain message body (one zstd frame or plain JSON, no newline) reads as a
//! stream of one message, so a reader takes an old server's single answer too.

use std::io::{BufRead, BufReader, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::messages::{DecodeError, MAX_MESSAGE_BYTES, decode_json};

/// The media type of a message stream.
pub const CONTENT_TYPE: &str = "application/vnd.zoufang.stream";
/// Most messages in one streamed request (a server refuses more).
pub const MAX_MESSAGES: usize = 64;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Writes a stream; [`StreamWriter::take`] hands out the bytes made so far, to send as they come.
pub struct StreamWriter {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    written: usize,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            encoder: zstd::stream::write::Encoder::new(Vec::new(), 3)?,
            written: 0,
        })
    }

    /// Appends a message, flushed: the bytes up to here decode to every message so far.
    pub fn push<T: Serialize>(&mut self, message: &T) -> std::io::Result<()> {
        let json = serde_json::to_vec(message)?;
        self.written += json.len() + 1;
        self.encoder.write_all(&json)?;
        self.encoder.write_all(b"\n")?;
        self.encoder.flush()
    }

    /// Uncompressed bytes written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// The compressed bytes made since the last take.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.encoder.get_mut())
    }

    /// Ends the stream; returns the bytes not yet taken.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        self.encoder.finish()
    }
}

/// Writes `messages` as one stream body.
pub fn encode_stream<T: Serialize>(messages: &[T]) -> std::io::Result<Vec<u8>> {
    let mut w = StreamWriter::new()?;
    let mut body = Vec::new();
    for m in messages {
        w.push(m)?;
        body.append(&mut w.take());
    }
    body.append(&mut w.finish()?);
    Ok(body)
}

/// Why a stream stopped giving messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The body ended inside a message (a cut link): the messages before it are whole.
    #[error("the body ends inside a message")]
    Truncated,
    #[error("{0}")]
    Message(DecodeError),
    #[error("reading the body failed: {0}")]
    Read(String),
}

enum Source<R: Read> {
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<R>>>),
    Plain(BufReader<R>),
}

/// Reads a stream's messages in order, as its bytes arrive from `R`.
pub struct StreamReader<R: Read> {
    source: Option<BufReader<Source<R>>>,
    pending: Option<BufReader<R>>,
    failed: Option<StreamError>,
}

impl<R: Read> std::fmt::Debug for StreamReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Zstd(d) => d.read(buf),
            Self::Plain(r) => r.read(buf),
        }
    }
}

impl<R: Read> StreamReader<R> {
    pub fn new(body: R) -> Self {
        Self {
            source: None,
            pending: Some(BufReader::new(body)),
            failed: None,
        }
    }

    /// Decides, from the first bytes, whether the body is compressed.
    fn source(&mut self) -> Result<&mut BufReader<Source<R>>, StreamError> {
        if let Some(mut raw) = self.pending.take() {
            let zstd = raw
                .fill_buf()
                .map_err(|e| StreamError::Read(e.to_string()))?
                .starts_with(&ZSTD_MAGIC);
            let source = if zstd {
                let d = zstd::stream::read::Decoder::with_buffer(raw)
                    .map_err(|e| StreamError::Read(e.to_string()))?;
                Source::Zstd(Box::new(d))
            } else {
                Source::Plain(raw)
            };
            self.source = Some(BufReader::new(source));
        }
        self.source
            .as_mut()
            .ok_or_else(|| StreamError::Read("the stream was not opened".into()))
    }

    /// The next message: `None` at the clean end of the body; after an error, the same error
    /// again (the messages before it were whole and already given).
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Option<Result<T, StreamError>> {
        if let Some(e) = &self.failed {
            return Some(Err(e.clone()));
        }
        match self.line() {
            Ok(None) => None,
            Ok(Some(line)) => match decode_json(&line) {
                Ok(m) => Some(Ok(m)),
                Err(e) => self.fail(StreamError::Message(e)),
            },
            Err(e) => self.fail(e),
        }
    }

    fn fail<T>(&mut self, e: StreamError) -> Option<Result<T, StreamError>> {
        self.failed = Some(e.clone());
        Some(Err(e))
    }

    /// The next line, bounded; a last line without its newline counts only if the body ended
    /// cleanly (a zstd stream that ends inside a frame is an error of the reader beneath).
    fn line(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        let source = self.source()?;
        let mut line = Vec::new();
        let bound = MAX_MESSAGE_BYTES as u64 + 2;
        match source.take(bound).read_until(b'\n', &mut line) {
            Ok(0) => Ok(None),
            Ok(_) if line.last() == Some(&b'\n') => {
                line.pop();
                Ok(Some(line))
            }
            Ok(_) if line.len() as u64 >= bound => {
                Err(StreamError::Message(DecodeError::Compression))
            }
            // The body's clean end, after a message without its newline (a plain body).
            Ok(_) => Ok(Some(line)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(StreamError::Truncated),
            Err(e) => Err(StreamError::Read(e.to_string())),
        }
    }
}

/// Every whole message of a body, and what stopped the reading if not its clean end (a cut
/// body gives its whole messages and [`StreamError::Truncated`]).
pub fn decode_stream<T: DeserializeOwned>(body: &[u8]) -> (Vec<T>, Option<StreamError>) {
    let mut reader = StreamReader::new(body);
    let mut out = Vec::new();
    loop {
        match reader.next_message() {
            None => return (out, None),
            Some(Ok(m)) => out.push(m),
            Some(Err(e)) => return (out, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::messages::{self, PROTOCOL_VERSION, PullRequest};
    use proptest::prelude::*;

    fn pull(n: u64) -> PullRequest {
        PullRequest {
            protocol: PROTOCOL_VERSION,
            cursors: [("513431".to_owned(), n)].into(),
            limit: 10,
            page: None,
        }
    }

    #[test]
    fn a_plain_body_is_a_stream_of_one() {
        let zstd = messages::encode(&pull(3)).unwrap();
        let (got, err) = decode_stream::<PullRequest>(&zstd);
        assert_eq!((got, err), (vec![pull(3)], None));
        let plain = serde_json::to_vec(&pull(4)).unwrap();
        assert_eq!(decode_stream::<PullRequest>(&plain), (vec![pull(4)], None));
        assert_eq!(decode_stream::<PullRequest>(b""), (vec![], None));
    }

    #[test]
    fn messages_share_one_compression_window() {
        let many: Vec<_> = (0..20).map(pull).collect();
        let stream = encode_stream(&many).unwrap();
        let apart: usize = many
            .iter()
            .map(|m| messages::encode(m).unwrap().len())
            .sum();
        assert!(stream.len() < apart, "{} vs {apart}", stream.len());
        assert_eq!(decode_stream::<PullRequest>(&stream), (many, None));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (got, err) = decode_stream::<PullRequest>(b"{\"protocol\":1}\nnot json\n");
        assert!(got.is_empty());
        assert!(matches!(err, Some(StreamError::Message(_))), "{err:?}");
        let (_, err) = decode_stream::<PullRequest>(&[0x28, 0xB5, 0x2F, 0xFD, 1, 2, 3]);
        assert!(err.is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any prefix of a stream gives exactly the messages wholly inside it, in order; the whole
        /// stream gives all of them and no error.
        #[test]
        fn any_prefix_gives_the_messages_it_holds(n in 1usize..12, cut in 0.0f64..1.0) {
            let many: Vec<_> = (0..n as u64).map(pull).collect();
            let mut w = StreamWriter::new().unwrap();
            let (mut body, mut ends) = (Vec::new(), Vec::new());
            for m in &many {
                w.push(m).unwrap();
                body.append(&mut w.take());
                ends.push(body.len());
            }
            body.append(&mut w.finish().unwrap());
            let at = ((body.len() as f64) * cut) as usize;
            let (got, err) = decode_stream::<PullRequest>(&body[..at]);
            let whole = ends.iter().filter(|e| **e <= at).count();
            // The last message may also decode if the cut falls after its flushed bytes.
            prop_assert!(got.len() == whole, "{} vs {whole}", got.len());
            prop_assert_eq!(&got[..], &many[..got.len()]);
            if at > 0 && at < body.len() && whole < n {
                prop_assert!(err.is_some());
            }
            let (all, err) = decode_stream::<PullRequest>(&body);
            prop_assert_eq!(all, many);
            prop_assert!(err.is_none());
        }
    }
}
