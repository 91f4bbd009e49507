//! Decoding the records inside a batch, with decompression bounded.
//!
//! The broker stores batches as sent and only looks inside one where Kafka's semantics need
//! record-level detail: keys on compacted topics, timestamps for ListOffsets, and record counts
//! that look forged. Decompression (and its cap, so a small "zip bomb" batch costs an error, not
//! the process) is `skiff_tiering::records`, shared with the compactor.

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};
pub use skiff_tiering::records::count_compressed_records;
use skiff_tiering::records::{decompress, DECOMPRESSED_BATCH_MAX_BYTES};

/// Decodes one stored batch's records.
pub fn decode_batch(batch: &Bytes) -> Result<RecordSet, String> {
    let mut buf = batch.clone();
    RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(|data: &mut Bytes, compression: Compression| {
            let input = data.split_to(data.len());
            decompress(compression as i16, input, DECOMPRESSED_BATCH_MAX_BYTES)
                .map_err(|e| anyhow::anyhow!(e))
        }),
    )
    .map_err(|e| format!("undecodable record batch: {e:#}"))
}
