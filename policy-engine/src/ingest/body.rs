//! A request body read as gRPC messages, holding nothing between them.
//!
//! tonic's `Streaming` decodes into one buffer per stream that keeps the capacity of the
//! largest message it ever held. An Envoy's first MetricsService message carries its node
//! (about 64 KB) and every flush its whole stats (hundreds of KB on a large Envoy), while the
//! stream stays open for the Envoy's life: with thousands of Envoys these idle buffers were
//! most of the engine's memory (BENCHMARKS.md, "Ingestion"). [`Messages`] reads the gRPC
//! framing itself: a message that arrives in one HTTP/2 data frame is handed on as a slice of
//! it, a longer one is gathered into a buffer of its own size, and once the caller drops the
//! message nothing of it stays with the stream.

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::{Code, Status};

/// The gRPC message prefix: a compressed flag and a big-endian length.
const PREFIX: usize = 5;

/// The most of a message allocated before its bytes arrive: a peer that announces a large
/// message and sends little costs no more than this.
const PREALLOCATE: usize = 256 * 1024;

/// The gRPC messages of a request body, one at a time.
#[derive(Debug)]
pub struct Messages {
    body: Body,
    max: usize,
    /// What is left of the last data frame.
    chunk: Bytes,
    /// The prefix being read, and how much of it has arrived.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// The message being gathered across data frames, with its length.
    partial: Option<(usize, Vec<u8>)>,
    ended: bool,
}

impl Messages {
    /// Reads `body`, refusing messages longer than `max` bytes.
    pub fn new(body: Body, max: usize) -> Self {
        Messages {
            body,
            max,
            chunk: Bytes::new(),
            prefix: [0; PREFIX],
            prefix_len: 0,
            partial: None,
            ended: false,
        }
    }

    /// The next message; `None` once the body ended (or the peer cancelled) between messages.
    /// After an error the stream is unusable. Cancel-safe: what has arrived stays in `self`.
    pub async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        loop {
            match self.take() {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(status) => {
                    self.ended = true;
                    return Some(Err(status));
                }
            }
            if self.ended {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    // Trailers (a request rarely has any) carry nothing doppel reads.
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
                // tonic's reading: a cancelled request is a stream that ended.
                Some(Err(status)) if status.code() == Code::Cancelled => {
                    self.ended = true;
                    return None;
                }
                Some(Err(status)) => {
                    self.ended = true;
                    return Some(Err(status));
                }
                None => {
                    self.ended = true;
                    return self.unfinished().map(Err);
                }
            }
        }
    }

    /// Bytes of a message or prefix held while waiting for the rest (0 between messages).
    pub fn held(&self) -> usize {
        self.chunk.len() + self.prefix_len + self.partial.as_ref().map_or(0, |(_, b)| b.capacity())
    }

    /// The error for a body that ended inside a message, if it did.
    fn unfinished(&self) -> Option<Status> {
        if let Some((len, buf)) = &self.partial {
            return Some(Status::internal(format!(
                "the stream ended inside a message: {} of its {len} bytes arrived",
                buf.len()
            )));
        }
        (self.prefix_len > 0).then(|| {
            Status::internal(format!(
                "the stream ended inside a message prefix: {} of its {PREFIX} bytes arrived",
                self.prefix_len
            ))
        })
    }

    /// A whole message from what has arrived, if there is one.
    fn take(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some((len, buf)) = &mut self.partial {
                let n = (*len - buf.len()).min(self.chunk.len());
                if buf.len() + n > buf.capacity() {
                    // Grow by doubling, never past the message's length.
                    let target = (buf.capacity() * 2).max(buf.len() + n).min(*len);
                    buf.reserve_exact(target - buf.len());
                }
                buf.extend_from_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                if buf.len() < *len {
                    return Ok(None);
                }
                let (_, buf) = self.partial.take().unwrap_or_default();
                return Ok(Some(Bytes::from(buf)));
            }
            if self.chunk.is_empty() {
                return Ok(None);
            }
            let n = (PREFIX - self.prefix_len).min(self.chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&self.chunk[..n]);
            self.chunk.advance(n);
            self.prefix_len += n;
            if self.prefix_len < PREFIX {
                return Ok(None);
            }
            self.prefix_len = 0;
            let [flag, length @ ..] = self.prefix;
            match flag {
                0 => {}
                1 => {
                    return Err(Status::unimplemented(
                        "a compressed message: doppel reads MetricsService messages uncompressed",
                    ));
                }
                other => {
                    return Err(Status::internal(format!(
                        "protocol error: a message with compressed flag {other} (valid flags are 0 and 1)"
                    )));
                }
            }
            let len = u32::from_be_bytes(length) as usize;
            if len > self.max {
                return Err(Status::out_of_range(format!(
                    "a message of {len} bytes: the limit is {} bytes",
                    self.max
                )));
            }
            if self.chunk.len() >= len {
                return Ok(Some(self.chunk.split_to(len)));
            }
            self.partial = Some((len, Vec::with_capacity(len.min(PREALLOCATE))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tokio_stream::StreamExt;

    /// `message` as gRPC frames it: flag 0, big-endian length, the bytes.
    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// A body of `bytes` in data frames of `size` bytes, then `end`.
    fn body(bytes: &[u8], size: usize, end: Option<Status>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, Status>> = bytes
            .chunks(size)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        frames.extend(end.map(Err));
        Body::new(StreamBody::new(tokio_stream::iter(frames)))
    }

    #[tokio::test]
    async fn body_messages_come_out_whole_however_framed_and_nothing_stays_between() {
        let large: Vec<u8> = (0..2 * PREALLOCATE + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let messages = [
            Vec::new(),
            b"ten bytes!".to_vec(),
            large.clone(),
            vec![7; 70_000],
        ];
        let bytes: Vec<u8> = messages.iter().flat_map(|m| framed(m)).collect();
        for size in [1, 4, 5, 6, 16_384, bytes.len()] {
            // One byte per frame through half a megabyte is slow: the small messages only.
            let bytes = if size == 1 { &bytes[..20] } else { &bytes[..] };
            let mut read = Messages::new(body(bytes, size, None), usize::MAX);
            let mut got = Vec::new();
            while let Some(message) = read.next().await {
                let message = message.unwrap();
                // What is held is at most the rest of the frame the message ended in.
                assert!(read.held() < size, "frames of {size}: {} held", read.held());
                got.push(message);
            }
            assert_eq!(read.held(), 0);
            let expected = if size == 1 {
                &messages[..2]
            } else {
                &messages[..]
            };
            assert_eq!(got.len(), expected.len(), "frames of {size}");
            for (got, expected) in got.iter().zip(expected) {
                assert!(got[..] == expected[..], "frames of {size}");
            }
        }
    }

    #[tokio::test]
    async fn body_a_partial_message_holds_what_arrived_not_what_it_announced() {
        // Announces 64 MiB, sends 10 bytes, and the body stays open.
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(64u32 << 20).to_be_bytes());
        bytes.extend_from_slice(&[1; 10]);
        let frames = tokio_stream::iter([Ok::<_, Status>(Frame::data(Bytes::from(bytes)))])
            .chain(tokio_stream::pending());
        let mut read = Messages::new(Body::new(StreamBody::new(frames)), usize::MAX);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), read.next()).await;
        assert!(waited.is_err(), "a message came out of 10 bytes");
        assert!(read.held() <= PREALLOCATE, "{} held", read.held());
    }

    async fn error_of(bytes: &[u8], max: usize, end: Option<Status>) -> Status {
        let mut read = Messages::new(body(bytes, 3, end), max);
        loop {
            match read.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => {
                    assert!(
                        read.next().await.is_none(),
                        "the stream goes on after an error"
                    );
                    return status;
                }
                None => panic!("no error"),
            }
        }
    }

    #[tokio::test]
    async fn body_bad_framing_fails_with_what_was_wrong() {
        let good = framed(b"ok");
        let mut long = good.clone();
        long.extend(framed(&[0; 101]));
        let status = error_of(&long, 100, None).await;
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(status.message().contains("101 bytes"), "{status:?}");

        let mut compressed = framed(b"zz");
        compressed[0] = 1;
        assert_eq!(
            error_of(&compressed, 100, None).await.code(),
            Code::Unimplemented
        );
        let mut flag = framed(b"zz");
        flag[0] = 9;
        let status = error_of(&flag, 100, None).await;
        assert!(status.message().contains("flag 9"), "{status:?}");

        let cut = framed(b"twelve bytes");
        let status = error_of(&cut[..10], 100, None).await;
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("5 of its 12 bytes"), "{status:?}");
        let status = error_of(&cut[..3], 100, None).await;
        assert!(status.message().contains("3 of its 5 bytes"), "{status:?}");

        let status = error_of(&good, 100, Some(Status::unavailable("reset"))).await;
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn body_a_cancelled_request_ends_the_stream_between_messages() {
        let good = framed(b"ok");
        let mut read = Messages::new(body(&good, 16, Some(Status::cancelled("gone"))), usize::MAX);
        assert_eq!(&read.next().await.unwrap().unwrap()[..], b"ok");
        assert!(read.next().await.is_none());
    }
}
