//! Decoding the records inside a batch, with decompression bounded.
//!
//! The broker stores batches as sent and only looks inside one where Kafka's semantics need
//! record-level detail: keys on compacted topics, timestamps for ListOffsets, and record counts
//! that look forged. Decompression output is capped, so a small "zip bomb" batch costs an error,
//! not the process.

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};
use skiff_tiering::batch::{BatchHeader, HEADER_LEN};
use std::io::Read;

/// Most bytes one batch may decompress to (a 1 MiB batch of repetitive JSON stays well below).
pub const DECOMPRESSED_BATCH_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The xerial framing Java clients wrap snappy batches in.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Decodes one stored batch's records.
pub fn decode_batch(batch: &Bytes) -> Result<RecordSet, String> {
    let mut buf = batch.clone();
    RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(|data: &mut Bytes, compression: Compression| {
            decompress(data, compression, DECOMPRESSED_BATCH_MAX_BYTES)
        }),
    )
    .map_err(|e| format!("undecodable record batch: {e:#}"))
}

/// The records of a compressed batch, decompressed (at most [`DECOMPRESSED_BATCH_MAX_BYTES`]).
pub fn decompressed_records(header: &BatchHeader, batch: &Bytes) -> Result<Bytes, String> {
    let compression = match header.compression() {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => return Err(format!("unknown compression codec {other}")),
    };
    let mut payload = batch.slice(HEADER_LEN..);
    decompress(&mut payload, compression, DECOMPRESSED_BATCH_MAX_BYTES)
        .map_err(|e| format!("{e:#}"))
}

fn read_capped(reader: impl Read, cap: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .context("decompression failed")?;
    if out.len() > cap {
        bail!("batch decompresses to more than {cap} bytes");
    }
    Ok(out.into())
}

fn snappy_block(block: &[u8], cap: usize, out: &mut BytesMut) -> anyhow::Result<()> {
    let len = snap::raw::decompress_len(block).context("bad snappy block")?;
    if out.len() + len > cap {
        bail!("batch decompresses to more than {cap} bytes");
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .context("snappy decompression failed")?;
    Ok(())
}

fn decompress(data: &mut Bytes, compression: Compression, cap: usize) -> anyhow::Result<Bytes> {
    let input = data.split_to(data.len());
    match compression {
        Compression::None => Ok(input),
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(&input[..]), cap),
        Compression::Zstd => read_capped(zstd::stream::read::Decoder::new(&input[..])?, cap),
        Compression::Lz4 => read_capped(lz4::Decoder::new(&input[..])?, cap),
        Compression::Snappy => {
            let mut out = BytesMut::new();
            if input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC) {
                let mut blocks = input.slice(XERIAL_HEADER_LEN..);
                while blocks.has_remaining() {
                    if blocks.remaining() < 4 {
                        bail!("truncated snappy block length");
                    }
                    let len = blocks.get_u32() as usize;
                    if len > blocks.remaining() {
                        bail!("truncated snappy block");
                    }
                    snappy_block(&blocks.split_to(len), cap, &mut out)?;
                }
            } else {
                snappy_block(&input, cap, &mut out)?;
            }
            Ok(out.freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn caps_every_codec() {
        let big = vec![b'a'; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&big).expect("gzip");
        let gz = Bytes::from(gz.finish().expect("gzip"));
        let zst = Bytes::from(zstd::encode_all(&big[..], 1).expect("zstd"));
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
        lz.write_all(&big).expect("lz4");
        let lz = Bytes::from(lz.finish().0);
        let raw_snappy = Bytes::from(
            snap::raw::Encoder::new()
                .compress_vec(&big)
                .expect("snappy"),
        );
        for (codec, data) in [
            (Compression::Gzip, gz),
            (Compression::Zstd, zst),
            (Compression::Lz4, lz),
            (Compression::Snappy, raw_snappy),
        ] {
            let out = decompress(&mut data.clone(), codec, 2 << 20).expect("under the cap");
            assert_eq!(out.len(), big.len(), "{codec:?}");
            let refused = decompress(&mut data.clone(), codec, 1000);
            assert!(refused.is_err(), "{codec:?} decompressed past the cap");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for codec in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            let mut junk = Bytes::from_static(b"\x82SNAPPY\x00not really compressed at all");
            assert!(decompress(&mut junk, codec, 1 << 20).is_err(), "{codec:?}");
        }
    }
}
