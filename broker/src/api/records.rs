//! Decoding the records inside a batch, with decompression bounded.
//!
//! The broker stores batches as sent and only looks inside one where Kafka's semantics need
//! record-level detail: keys on compacted topics, timestamps for ListOffsets, and record counts
//! that look forged. Decompression output is capped, so a small "zip bomb" batch costs an error,
//! not the process.

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};
use skiff_tiering::batch::{count_records, BatchHeader, HEADER_LEN};
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

/// Counts the records of a compressed batch by streaming its decompression and skipping each
/// record's body, so memory stays at a small buffer whatever the batch expands to; at most
/// [`DECOMPRESSED_BATCH_MAX_BYTES`] are decompressed (a "zip bomb" costs an error). Snappy
/// (block-framed) is decompressed block by block within the same cap.
pub fn count_compressed_records(header: &BatchHeader, batch: &Bytes) -> Result<i64, String> {
    let payload = batch.slice(HEADER_LEN..);
    let cap = DECOMPRESSED_BATCH_MAX_BYTES as u64 + 1;
    let stream = |reader: Box<dyn Read + '_>| {
        count_records(std::io::BufReader::new(reader.take(cap))).map_err(|e| e.to_string())
    };
    match header.compression() {
        1 => stream(Box::new(flate2::read::GzDecoder::new(&payload[..]))),
        3 => stream(Box::new(
            lz4::Decoder::new(&payload[..]).map_err(|e| e.to_string())?,
        )),
        4 => stream(Box::new(
            zstd::stream::read::Decoder::new(&payload[..]).map_err(|e| e.to_string())?,
        )),
        2 => {
            let mut data = payload.clone();
            let records = decompress(&mut data, Compression::Snappy, DECOMPRESSED_BATCH_MAX_BYTES)
                .map_err(|e| format!("{e:#}"))?;
            count_records(&records[..]).map_err(|e| e.to_string())
        }
        other => Err(format!("unknown compression codec {other}")),
    }
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
    fn counting_streams_and_stops_at_the_cap() {
        // One "record" that claims 100 MiB of zeros: zstd makes it a few KB on the wire.
        let mut payload = vec![0u8; 0];
        let length = 100u64 << 20;
        let mut zigzag = length << 1;
        while zigzag >= 0x80 {
            payload.push((zigzag as u8) | 0x80);
            zigzag >>= 7;
        }
        payload.push(zigzag as u8);
        payload.resize(payload.len() + (100 << 20), 0);
        let bomb = zstd::encode_all(&payload[..], 3).expect("zstd");
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let error = count_records(std::io::BufReader::new(
            zstd::stream::read::Decoder::new(&bomb[..])
                .expect("decoder")
                .take(DECOMPRESSED_BATCH_MAX_BYTES as u64 + 1),
        ))
        .expect_err("over the cap")
        .to_string();
        assert!(error.contains("runs past"), "{error}");
        // Three small records.
        let records = [&[2u8, 0][..], &[4, 0, 0], &[0]].concat();
        assert_eq!(count_records(&records[..]).expect("counted"), 3);
        assert!(count_records(&[6u8, 0][..]).is_err(), "cut short");
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
