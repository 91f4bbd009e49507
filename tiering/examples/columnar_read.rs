//! Parquet read cost in one process, no network: rebuilding record batches from a file written
//! the compactor's way, against slicing the same batches out of memory (what a flush object
//! costs) and against zstd-decompressing the file's bytes alone (a floor).
//!
//! `cargo run --release -p skiff-tiering --example columnar_read [records] [value_bytes] [runs]
//! [hex|json]`: values half random hex and half a repeated byte (what bench/compaction.py
//! produces), or JSON events (field names, a few enumerations, numbers, a random id; padded
//! with more events to `value_bytes`).

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use skiff_tiering::batch::parse_header;
use skiff_tiering::columnar::{ColumnarReader, FileWriter};
use skiff_tiering::records::{self, BatchFields, Header, Record};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(200_000, |a| a.parse().expect("records"));
    let value_len: usize = args
        .next()
        .map_or(1024, |a| a.parse().expect("value bytes"));
    let runs: usize = args.next().map_or(5, |a| a.parse().expect("runs"));
    let json = match args.next().as_deref() {
        None | Some("hex") => false,
        Some("json") => true,
        Some(other) => panic!("payload {other}: hex or json"),
    };
    let per_batch = 100;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut batches = Vec::new();
    let mut record_bytes = 0usize;
    for first in (0..count).step_by(per_batch) {
        let records: Vec<Record> = (first..(first + per_batch).min(count))
            .map(|i| {
                let mut value = Vec::with_capacity(value_len);
                if json {
                    const KINDS: [&str; 4] = ["page_view", "click", "add_to_cart", "purchase"];
                    const COUNTRIES: [&str; 5] = ["DE", "FR", "US", "JP", "BR"];
                    value.push(b'[');
                    while value.len() < value_len {
                        let r = random();
                        let event = format!(
                            r#"{{"event_id":"{:016x}{:016x}","user_id":{},"kind":"{}","country":"{}","amount_cents":{},"ts":{},"path":"/shop/item/{}"}},"#,
                            r,
                            random(),
                            r % 100_000,
                            KINDS[(r >> 20) as usize % KINDS.len()],
                            COUNTRIES[(r >> 30) as usize % COUNTRIES.len()],
                            (r >> 40) % 50_000,
                            1_700_000_000_000u64 + i as u64,
                            (r >> 12) % 10_000
                        );
                        value.extend_from_slice(event.as_bytes());
                    }
                    value.truncate(value_len - 1);
                    value.push(b']');
                } else {
                    // Half random hex, half a repeated pattern: what bench/compaction.py
                    // produces.
                    while value.len() < value_len / 2 {
                        value.extend_from_slice(format!("{:016x}", random()).as_bytes());
                    }
                    value.truncate(value_len / 2);
                    value.resize(value_len, b'x');
                }
                record_bytes += value_len + 16;
                Record {
                    offset: i as i64,
                    timestamp: 1_700_000_000_000 + i as i64,
                    key: Some(Bytes::from(format!("key-{:08}", i % 5000))),
                    value: Some(Bytes::from(value)),
                    headers: vec![Header {
                        key: Bytes::from_static(b"trace"),
                        value: Some(Bytes::from(format!("{i}"))),
                    }],
                }
            })
            .collect();
        let fields = BatchFields {
            base_offset: first as i64,
            last_offset: (first + records.len()) as i64 - 1,
            partition_leader_epoch: 0,
            log_append_time: false,
            transactional: false,
            control: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        batches.push(records::encode(&fields, &records));
    }
    let mut writer = FileWriter::new("bench", 0).expect("writer");
    for batch in &batches {
        let header = parse_header(batch).expect("header");
        let records = records::decode(&header, batch).expect("decode");
        writer.push(&header, &records).expect("push");
    }
    let (file, summary) = writer.finish().expect("finish");
    let gib = record_bytes as f64 / (1u64 << 30) as f64;
    println!(
        "{count} records, {:.1} MiB of records, file {:.1} MiB, {} rows",
        record_bytes as f64 / 1048576.0,
        file.len() as f64 / 1048576.0,
        summary.rows
    );
    let metered = skiff_tiering::metered::MeteredStore::new(Arc::new(InMemory::new()));
    let counts = metered.counts();
    let store: Arc<dyn ObjectStore> = Arc::new(metered);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let size = file.len() as u64;
    runtime
        .block_on(store.put(&Path::from("bench.parquet"), file.into()))
        .expect("put");
    let mut parquet = Vec::new();
    let mut copy = Vec::new();
    let mut sink = Vec::with_capacity(64 << 20);
    // The floor Parquet pays: the stored batches as zstd frames of a data page's size, at the
    // compactor's level.
    let frames: Vec<(usize, Vec<u8>)> = batches
        .concat()
        .chunks(64 * 1024)
        .map(|page| (page.len(), zstd::bulk::compress(page, 3).expect("compress")))
        .collect();
    let mut zstd_floor = Vec::new();
    for _ in 0..runs {
        // A reader with no row-group cache: every run decodes every row group, as a cold
        // catch-up does.
        let reader = ColumnarReader::new(store.clone(), 0);
        let start = cpu_seconds();
        let rebuilt = runtime.block_on(async {
            let groups = reader
                .row_groups("bench.parquet", size)
                .await
                .expect("footer");
            let mut batches = 0;
            for i in 0..groups.len() {
                batches += reader
                    .row_group("bench.parquet", size, i)
                    .await
                    .expect("row group")
                    .ranges
                    .len();
            }
            batches
        });
        assert_eq!(rebuilt, batches.len());
        parquet.push((cpu_seconds() - start) / gib);
        let seconds = wall_seconds(|| {
            for batch in &batches {
                if sink.len() + batch.len() > sink.capacity() {
                    sink.clear();
                }
                sink.extend_from_slice(batch);
            }
            std::hint::black_box(&sink);
        });
        copy.push(seconds / gib);
        let mut page = vec![0u8; 64 * 1024];
        let mut decompressor = zstd::bulk::Decompressor::new().expect("decompressor");
        let seconds = wall_seconds(|| {
            for (length, frame) in &frames {
                let n = decompressor
                    .decompress_to_buffer(frame, &mut page[..])
                    .expect("decompress");
                assert_eq!(n, *length);
            }
        });
        zstd_floor.push(seconds / gib);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "CPU-s per GiB of records (medians of {runs}): parquet rebuild {:.3}, \
         zstd decompression alone {:.3}, one copy of stored batches {:.3}; GETs per pass {}",
        median(&mut parquet),
        median(&mut zstd_floor),
        median(&mut copy),
        counts.gets.load(std::sync::atomic::Ordering::Relaxed) / runs as u64
    );
}

/// CPU time this process has used (all threads), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start past the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split(' ')
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// Wall time of `work` (one thread; CPU ticks are too coarse for it).
#[allow(clippy::disallowed_methods)] // a benchmark measures real time
fn wall_seconds(work: impl FnOnce()) -> f64 {
    let start = std::time::Instant::now();
    work();
    start.elapsed().as_secs_f64()
}
