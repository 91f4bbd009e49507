//! Kafka request framing: a length-prefixed frame read off a connection, its length checked
//! against the limits before anything is allocated, its bytes charged to the request budget
//! before they are read, and its body bounded in time.

use crate::low_watermark::FrameNeed;
use crate::memory::{Budgets, Held};
use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Bytes read into a frame at a time.
const FRAME_READ_CHUNK_BYTES: usize = 64 * 1024;

/// A frame up to this long gets its whole buffer at once, rounded up to a power of two (the
/// sizes the allocator reuses best: exact sizes cost 50 MiB of peak RSS at full speed): growing
/// it as the bytes arrive copied every produced byte once more (5 % of the broker's produce CPU,
/// with the page faults of each larger buffer). Its pages are only touched as bytes arrive, and
/// the frame's length is already charged to the request budget. A longer frame's buffer grows
/// with what the client really sent, so announcing 100 MB and sending nothing holds no 100 MB
/// buffer.
const FRAME_BUFFER_AT_ONCE_MAX_BYTES: usize = 8 << 20;

/// A frame's body must arrive within this, plus one second per [`FRAME_BODY_MIN_BYTES_PER_S`].
const FRAME_BODY_DEADLINE_BASE: Duration = Duration::from_secs(30);
const FRAME_BODY_MIN_BYTES_PER_S: usize = 1024 * 1024;

/// How long a frame of `length` bytes may take to arrive once its length is known.
fn frame_body_deadline(length: usize) -> Duration {
    FRAME_BODY_DEADLINE_BASE + Duration::from_secs((length / FRAME_BODY_MIN_BYTES_PER_S) as u64)
}

/// Frame length limits: every frame, and frames of APIs other than Produce.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_bytes: usize,
    pub non_produce_max_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is negative or over the limit {1}")]
    BadLength(i64, usize),
    #[error(
        "frame of api key {0} has length {1}, over the limit {2} for requests other than produce"
    )]
    NonProduceTooLong(i16, usize, usize),
    #[error("connection idle for longer than {0:?}")]
    Idle(Duration),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A request frame and the budget it holds until its request was handled.
#[derive(Debug)]
pub struct Frame {
    pub bytes: BytesMut,
    pub held: Held,
}

/// Reads one length-prefixed frame; `Ok(None)` on a clean end of stream. Waiting for the frame
/// to start may take at most `idle`; its body at most [`frame_body_deadline`] (and `idle`). The
/// frame's bytes are taken from the request budget before they are read (waiting for them is
/// not counted against the client); what decoding it allocates is reserved apart
/// (`Budgets::decoding`).
pub async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    limits: FrameLimits,
    idle: Duration,
    budgets: &Budgets,
    need: &FrameNeed,
) -> Result<Option<Frame>, FrameError> {
    let mut prefix = [0u8; 4];
    match tokio::time::timeout(idle, reader.read_exact(&mut prefix)).await {
        Err(_) => return Err(FrameError::Idle(idle)),
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.into()),
    }
    let length = i32::from_be_bytes(prefix);
    let Ok(length) = usize::try_from(length) else {
        return Err(FrameError::BadLength(i64::from(length), limits.max_bytes));
    };
    if length > limits.max_bytes {
        return Err(FrameError::BadLength(length as i64, limits.max_bytes));
    }
    // The frame's bytes are reserved from the broker-wide budget: a client that announces a
    // large frame and sends it slowly must not hold them for long.
    let body_deadline = idle.min(frame_body_deadline(length));
    // The api key first (two bytes), to charge the frame in one acquisition.
    let mut key = [0u8; 2];
    if length >= 2 {
        match tokio::time::timeout(body_deadline, reader.read_exact(&mut key)).await {
            Err(_) => return Err(FrameError::Idle(body_deadline)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FrameError::Truncated)
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
    }
    let api_key = i16::from_be_bytes(key);
    let produce = api_key == ApiKey::Produce as i16;
    if !produce && length > limits.non_produce_max_bytes {
        return Err(FrameError::NonProduceTooLong(
            api_key,
            length,
            limits.non_produce_max_bytes,
        ));
    }
    let held = budgets.frame(length).await;
    let mut frame = BytesMut::with_capacity(
        length
            .min(FRAME_BUFFER_AT_ONCE_MAX_BYTES)
            .next_power_of_two(),
    );
    frame.extend_from_slice(&key[..length.min(2)]);
    let body = async {
        while frame.len() < length {
            need.set(length - frame.len());
            let wanted = (length - frame.len()).min(FRAME_READ_CHUNK_BYTES);
            frame.reserve(wanted);
            let read = (&mut *reader)
                .take(wanted as u64)
                .read_buf(&mut frame)
                .await?;
            if read == 0 {
                return Err(FrameError::Truncated);
            }
        }
        Ok(())
    };
    // Waiting for the budget does not count against the client; reading does.
    let body = tokio::time::timeout(body_deadline, body).await;
    need.set(0);
    match body {
        Err(_) => return Err(FrameError::Idle(body_deadline)),
        Ok(result) => result?,
    }
    Ok(Some(Frame { bytes: frame, held }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::BudgetSettings;
    use tokio::io::AsyncWriteExt;

    fn limits(max_bytes: usize) -> FrameLimits {
        FrameLimits {
            max_bytes,
            non_produce_max_bytes: max_bytes,
        }
    }

    /// [`read_frame`] for a reader under no low-water mark.
    async fn read_any(
        reader: &mut (impl AsyncReadExt + Unpin),
        limits: FrameLimits,
        idle: Duration,
        budgets: &Budgets,
    ) -> Result<Option<Frame>, FrameError> {
        read_frame(reader, limits, idle, budgets, &FrameNeed::default()).await
    }

    fn budgets() -> Budgets {
        Budgets::new(BudgetSettings {
            queued_max_request_bytes: 1 << 30,
            non_produce_request_max_bytes: 1 << 20,
            fetch_buffer_max_bytes: 1 << 20,
            connection_fetch_buffer_max_bytes: 1 << 20,
        })
    }

    #[tokio::test]
    async fn frames_are_bounded_and_read_as_they_arrive() {
        let idle = Duration::from_secs(5);
        let mut ok: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c'];
        let frame = read_any(&mut ok, limits(10), idle, &budgets())
            .await
            .expect("frame")
            .expect("some");
        assert_eq!(&frame.bytes[..], b"abc");
        let mut empty: &[u8] = &[];
        assert!(read_any(&mut empty, limits(10), idle, &budgets())
            .await
            .expect("eof")
            .is_none());
        let mut too_long: &[u8] = &[0, 0, 0, 11];
        assert!(matches!(
            read_any(&mut too_long, limits(10), idle, &budgets()).await,
            Err(FrameError::BadLength(11, 10))
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_any(&mut negative, limits(10), idle, &budgets()).await,
            Err(FrameError::BadLength(-1, 10))
        ));
        // Announces 100 MB, sends 2 bytes: an error, and no 100 MB buffer.
        let mut short: &[u8] = &[0x05, 0xf5, 0xe1, 0x00, 1, 2];
        assert!(matches!(
            read_any(&mut short, limits(200_000_000), idle, &budgets()).await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_time_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let idle = Duration::from_secs(30);
        let reading =
            tokio::spawn(async move { read_any(&mut server, limits(10), idle, &budgets()).await });
        client.write_all(&[0, 0, 0, 5, 1]).await.expect("write");
        let result = reading.await.expect("join");
        assert!(matches!(result, Err(FrameError::Idle(_))), "{result:?}");
    }

    #[tokio::test]
    async fn only_produce_frames_may_be_large() {
        let idle = Duration::from_secs(5);
        let budgets = budgets();
        let limits = FrameLimits {
            max_bytes: 100,
            non_produce_max_bytes: 10,
        };
        let frame = |key: i16, len: usize| {
            let mut bytes = (len as i32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&key.to_be_bytes());
            bytes.resize(4 + len, 0);
            bytes
        };
        let produce = frame(ApiKey::Produce as i16, 50);
        let read = read_any(&mut &produce[..], limits, idle, &budgets)
            .await
            .expect("produce frame")
            .expect("some");
        assert_eq!(read.held.bytes(), 50);
        let metadata = frame(ApiKey::Metadata as i16, 50);
        assert!(matches!(
            read_any(&mut &metadata[..], limits, idle, &budgets).await,
            Err(FrameError::NonProduceTooLong(3, 50, 10))
        ));
        let small = frame(ApiKey::Metadata as i16, 10);
        let read = read_any(&mut &small[..], limits, idle, &budgets)
            .await
            .expect("small frame")
            .expect("some");
        assert_eq!(
            read.held.bytes(),
            10,
            "the frame; decoding is reserved apart"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_sent_too_slowly_gives_its_budget_back() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let budgets = budgets();
        // Announces 10 MiB and sends 1 byte: dropped after 40 s, well before the idle limit.
        let reading = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let result = read_any(
                &mut server,
                limits(100 << 20),
                Duration::from_secs(600),
                &budgets,
            )
            .await;
            (result, started.elapsed())
        });
        client.write_all(&[0, 0xa0, 0, 0, 0]).await.expect("write");
        let (result, took) = reading.await.expect("join");
        assert!(matches!(result, Err(FrameError::Idle(_))), "{result:?}");
        assert_eq!(took, Duration::from_secs(40));
    }
}
