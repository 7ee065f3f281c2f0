//! The body of an attachment chunk: a run of frames, each `[length u32 LE][crc32 u32 LE][bytes]`.
//! The server keeps every whole frame whose checksum holds, even when the connection is cut in
//! the middle of the chunk: a cut costs at most the frame in flight, not the chunk, and a
//! corrupted frame is refused (with what came before it kept) and sent again.

/// The media type of a framed chunk body.
pub const CONTENT_TYPE: &str = "application/vnd.zoufang.frames";

/// Content bytes per frame: small, so a cut wastes little; the 8-byte header costs 0.2 %.
pub const FRAME_PAYLOAD: usize = 4096;
/// Largest frame payload a reader accepts.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;
const HEADER: usize = 8;

/// Frames `content` for the wire.
pub fn encode_frames(content: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(content.len() + content.len().div_ceil(FRAME_PAYLOAD) * HEADER);
    for payload in content.chunks(FRAME_PAYLOAD) {
        // A frame is at most FRAME_PAYLOAD bytes, far inside u32.
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Why a chunk body stopped being usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame's checksum does not match its bytes")]
    Checksum,
    #[error("a frame announces an impossible length")]
    Length,
    #[error("the body ends inside a frame")]
    Truncated,
}

/// Reads frames as the body arrives, in pieces of any size. Verified content accumulates in
/// [`FrameReader::content`]; after the first bad frame nothing more is accepted.
#[derive(Debug, Default)]
pub struct FrameReader {
    pending: Vec<u8>,
    content: Vec<u8>,
    failed: Option<FrameError>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the body; an error stops the reader (the content verified so
    /// far stays).
    pub fn push(&mut self, mut piece: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        while !piece.is_empty() {
            // Up to the end of the frame being read (at least one byte: `piece` is not empty).
            let take = self
                .wanted()
                .saturating_sub(self.pending.len())
                .clamp(1, piece.len());
            let (head, rest) = piece.split_at(take);
            self.pending.extend_from_slice(head);
            piece = rest;
            if let Err(e) = self.complete_frame() {
                self.failed = Some(e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Bytes needed for the frame being read (its header first).
    fn wanted(&self) -> usize {
        le_u32(&self.pending, 0).map_or(HEADER, |len| HEADER + len as usize)
    }

    fn complete_frame(&mut self) -> Result<(), FrameError> {
        let (Some(len), Some(crc)) = (le_u32(&self.pending, 0), le_u32(&self.pending, 4)) else {
            return Ok(());
        };
        let len = len as usize;
        if len == 0 || len > MAX_FRAME_PAYLOAD {
            return Err(FrameError::Length);
        }
        let Some(payload) = self.pending.get(HEADER..HEADER + len) else {
            return Ok(());
        };
        if crc32fast::hash(payload) != crc {
            return Err(FrameError::Checksum);
        }
        self.content.extend_from_slice(payload);
        self.pending.clear();
        Ok(())
    }

    /// The verified content so far.
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// Ends the body: the verified content, and whether the body ended cleanly (on a frame
    /// boundary, with no bad frame).
    pub fn finish(self) -> (Vec<u8>, Result<(), FrameError>) {
        let outcome = match self.failed {
            Some(e) => Err(e),
            None if !self.pending.is_empty() => Err(FrameError::Truncated),
            None => Ok(()),
        };
        (self.content, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn content(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    proptest! {
        /// Whatever the pieces the network delivers, the content comes out whole.
        #[test]
        fn any_split_reads_back(n in 0usize..20_000, cuts in proptest::collection::vec(1usize..5000, 0..20)) {
            let data = content(n);
            let body = encode_frames(&data);
            let mut reader = FrameReader::new();
            let mut rest = &body[..];
            for c in cuts {
                let (head, tail) = rest.split_at(c.min(rest.len()));
                reader.push(head).unwrap();
                rest = tail;
            }
            reader.push(rest).unwrap();
            let (out, outcome) = reader.finish();
            prop_assert_eq!(outcome, Ok(()));
            prop_assert_eq!(out, data);
        }

        /// A body cut anywhere keeps exactly the whole frames before the cut.
        #[test]
        fn a_cut_keeps_the_whole_frames(n in 1usize..20_000, at in 0usize..21_000) {
            let data = content(n);
            let body = encode_frames(&data);
            let at = at.min(body.len());
            let mut reader = FrameReader::new();
            reader.push(&body[..at]).unwrap();
            let whole = at / (FRAME_PAYLOAD + HEADER);
            // Only the last frame may be short, and it is whole only at the body's end.
            let kept = if at == body.len() { n } else { (whole * FRAME_PAYLOAD).min(n) };
            let (out, outcome) = reader.finish();
            prop_assert_eq!(&out[..], &data[..kept]);
            prop_assert_eq!(outcome.is_ok(), at == body.len() || at % (FRAME_PAYLOAD + HEADER) == 0);
        }

        /// A flipped bit anywhere is caught; the frames before it are kept, nothing after.
        #[test]
        fn a_flipped_bit_is_refused(n in 1usize..20_000, at in 0usize..21_000, bit in 0u8..8) {
            let data = content(n);
            let mut body = encode_frames(&data);
            let at = at % body.len();
            body[at] ^= 1 << bit;
            let mut reader = FrameReader::new();
            let pushed = reader.push(&body);
            let (out, outcome) = reader.finish();
            prop_assert!(pushed.is_err() || outcome.is_err());
            let frame = at / (FRAME_PAYLOAD + HEADER);
            prop_assert!(out.len() <= frame * FRAME_PAYLOAD);
            prop_assert_eq!(&out[..], &data[..out.len()]);
        }
    }
}
