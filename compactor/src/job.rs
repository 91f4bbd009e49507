//! One partition's job: read its index, take a prefix of its flush-object part, write it as a
//! Parquet file, and swap the file in (one fenced transaction, see `skiff_tiering::layout`).
//!
//! Order (what makes a crash anywhere harmless): the file and any new index objects are written
//! first, under fresh keys nothing references; the swap then references them and drops the
//! consumed keys in one transaction. A job that dies before the swap leaves only unreferenced
//! objects, which garbage collection removes once they are older than the orphan age; a swap
//! that fails its compares (the leader rolled the keys up, another compactor got there first)
//! changes nothing, and the next pass plans again from what is stored.

use crate::convert::{self, ConvertError, Sections};
use crate::cut::{self, Budget, Cut};
use crate::CompactorSettings;
use object_store::{ObjectStore, ObjectStoreExt};
use skiff_tiering::catalog::{Catalog, CatalogError, Topic};
use skiff_tiering::columnar::{ColumnarError, FileSummary};
use skiff_tiering::keys::{self, Layout, ParquetFile, PartitionState};
use skiff_tiering::layout::{self, IndexSnapshot, Swap};
use skiff_tiering::log::TopicPartition;
use skiff_tiering::metadata::{MetadataError, MetadataStore, Revision};
use skiff_tiering::producers::AbortedTxn;
use skiff_tiering::tree::{IndexObjects, ReadError};
use skiff_tiering::{paths, Clock};
use std::sync::Arc;

/// What every job needs.
#[derive(Debug)]
pub struct Ctx {
    pub store: Arc<dyn MetadataStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub clock: Arc<dyn Clock>,
    pub settings: CompactorSettings,
    pub index_objects: IndexObjects,
    pub catalog: Catalog,
}

impl Ctx {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        objects: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
        settings: CompactorSettings,
    ) -> Self {
        Self {
            catalog: Catalog::new(store.clone()),
            index_objects: IndexObjects::new(objects.clone()),
            store,
            objects,
            clock,
            settings,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("upload failed: {0}")]
    Upload(String),
    /// The index changed since the job read it (a roll-up, another compactor): nothing was
    /// changed; the next pass plans again.
    #[error("index changed under the job: {0}")]
    Conflict(String),
    #[error("{0}")]
    Deadline(String),
    #[error("conversion task failed: {0}")]
    Task(String),
}

impl From<CatalogError> for JobError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Metadata(m) => JobError::Metadata(m),
            other => JobError::Metadata(MetadataError::Unavailable(other.to_string())),
        }
    }
}

impl From<ColumnarError> for JobError {
    fn from(error: ColumnarError) -> Self {
        JobError::Convert(ConvertError::Parquet(error))
    }
}

/// A job planned from what is stored.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tp: TopicPartition,
    pub topic_create_revision: Revision,
    pub log_start: i64,
    pub snapshot: IndexSnapshot,
    pub cut: Cut,
    /// Bytes of the cut's leaves to read.
    pub read_bytes: u64,
    /// Whether the cut takes the whole flush-object part.
    pub whole: bool,
    /// The topic's values are JSON (`parquet.value.format=json`): typed columns too.
    pub json_values: bool,
}

/// What a job plans from: a partition's topic, state and index as stored now.
pub struct Stored {
    pub topic: Topic,
    pub state: PartitionState,
    pub snapshot: IndexSnapshot,
}

/// Reads what a job plans from; None if the topic or partition is gone.
pub async fn read_partition(ctx: &Ctx, tp: &TopicPartition) -> Result<Option<Stored>, JobError> {
    let Some(topic) = ctx.catalog.get(&tp.topic).await? else {
        return Ok(None);
    };
    if tp.partition >= topic.record.partitions {
        return Ok(None);
    }
    let state = match ctx
        .store
        .get(&keys::partition(&tp.topic, tp.partition))
        .await?
    {
        Some(kv) => keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?,
        None => PartitionState::default(),
    };
    let snapshot = IndexSnapshot::load(&*ctx.store, &tp.topic, tp.partition).await?;
    Ok(Some(Stored {
        topic,
        state,
        snapshot,
    }))
}

/// The partition's last stable offset as its leader last committed it (`i64::MAX` while no
/// transaction is open there). Read after the layout: a transaction opening later starts above
/// every offset that layout holds.
pub async fn last_stable_offset(ctx: &Ctx, tp: &TopicPartition) -> Result<i64, JobError> {
    let key = keys::producers(&tp.topic, tp.partition);
    let Some(kv) = ctx.store.get(&key).await? else {
        return Ok(i64::MAX);
    };
    let states: skiff_tiering::producers::ProducerStates =
        keys::decode(&kv.key, &kv.value).map_err(MetadataError::Corrupt)?;
    Ok(states.last_stable_offset(i64::MAX))
}

/// Plans a job for `tp` reading at most `max_bytes`; None when there is nothing to do (or the
/// topic is gone).
pub async fn plan(
    ctx: &Ctx,
    tp: &TopicPartition,
    max_bytes: u64,
) -> Result<Option<Plan>, JobError> {
    let Some(Stored {
        topic,
        state,
        snapshot,
    }) = read_partition(ctx, tp).await?
    else {
        return Ok(None);
    };
    let log_start = state.log_start_offset;
    let wal = snapshot.wal_slots();
    let expired = has_expired(&snapshot.layout, log_start);
    if wal.is_empty() && !expired {
        return Ok(None);
    }
    let mut budget = Budget::new(max_bytes, log_start);
    let cut = if wal.is_empty() {
        Cut::default()
    } else {
        cut::cut(
            &ctx.index_objects,
            &snapshot,
            &mut budget,
            ctx.clock.now_ms(),
        )
        .await?
    };
    let whole = cut.remainder.is_none() && cut.consumed.len() == wal.len();
    Ok(Some(Plan {
        tp: tp.clone(),
        topic_create_revision: topic.create_revision,
        log_start,
        snapshot,
        read_bytes: budget.taken_bytes(),
        cut,
        whole,
        json_values: crate::rewrite::Policy::from_configs(&topic.record.configs).json_values,
    }))
}

/// Whether the Parquet part holds files wholly below the log start (to drop).
pub fn has_expired(layout: &Layout, log_start: i64) -> bool {
    layout.files.iter().any(|f| f.last_offset < log_start)
        || layout.rollups.iter().any(|r| r.last_offset < log_start)
}

/// Uploads the new index objects, then swaps (what every job ends with). Nothing is committed if
/// any object the swap is first to reference (`uploaded` files, `new_objects`) was named more
/// than the object commit timeout ago (garbage collection may count it as an orphan), or if the
/// index changed since the job read it.
pub(crate) async fn commit(
    ctx: &Ctx,
    tp: &TopicPartition,
    swap: Swap,
    new_objects: layout::NewIndexObjects,
    uploaded: &[&str],
) -> Result<(), JobError> {
    for (path, body) in &new_objects {
        ctx.objects
            .put(path, layout::encode_body(body).into())
            .await
            .map_err(|e| JobError::Upload(format!("index object={path}: {e}")))?;
    }
    let now_ms = ctx.clock.now_ms();
    let oldest_ms = new_objects
        .iter()
        .map(|(path, _)| paths::name_age_ms(path.as_ref(), now_ms))
        .chain(uploaded.iter().map(|key| paths::name_age_ms(key, now_ms)))
        .max()
        .unwrap_or(0);
    if oldest_ms > ctx.settings.object_commit_timeout_ms {
        return Err(JobError::Deadline(format!(
            "{tp}: an object was named {oldest_ms} ms ago, over the object commit timeout; not committed"
        )));
    }
    if !ctx.store.txn(swap.txn()).await?.succeeded {
        return Err(JobError::Conflict(format!(
            "{tp}: the index changed since it was read"
        )));
    }
    for (path, body) in new_objects {
        ctx.index_objects.insert(path.to_string(), Arc::new(body));
    }
    Ok(())
}

/// Uploads a file `FileWriter` wrote, covering offsets `base..=last`, under a key named now
/// (the commit timeout runs from there, see [`commit`]); returns its index entry, which keeps
/// the aborted transactions of `aborted` whose markers fall in the file's range.
pub(crate) async fn upload_file(
    ctx: &Ctx,
    tp: &TopicPartition,
    (base_offset, last_offset): (i64, i64),
    (bytes, summary): (bytes::Bytes, &FileSummary),
    aborted: &[AbortedTxn],
) -> Result<ParquetFile, JobError> {
    let path = paths::new_parquet_file(
        &tp.topic,
        tp.partition,
        base_offset,
        last_offset,
        ctx.clock.now_ms(),
    );
    ctx.objects
        .put(&path, bytes.into())
        .await
        .map_err(|e| JobError::Upload(format!("object={path}: {e}")))?;
    Ok(ParquetFile {
        base_offset,
        last_offset,
        max_timestamp: summary.max_timestamp,
        object: path.to_string(),
        bytes: summary.bytes,
        rows: summary.rows,
        crc32c: summary.crc32c,
        aborted: aborted
            .iter()
            .filter(|a| (base_offset..=last_offset).contains(&a.last_offset))
            .copied()
            .collect(),
    })
}

/// What a job changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The new end of the Parquet part.
    pub parquet_end: i64,
    pub file: Option<ParquetFile>,
    /// Whether the job took the whole flush-object part it saw.
    pub whole: bool,
}

/// Converts the plan's leaves (their sections fetched into `sections`), uploads the file and
/// swaps it in.
pub async fn run(ctx: &Ctx, plan: Plan, sections: Sections) -> Result<Outcome, JobError> {
    let Plan {
        tp,
        topic_create_revision,
        log_start,
        snapshot,
        cut,
        whole,
        json_values,
        ..
    } = plan;
    let mut layout = snapshot.layout.clone();
    layout.files.retain(|f| f.last_offset >= log_start);
    layout.rollups.retain(|r| r.last_offset >= log_start);
    let mut file = None;
    let end_of_cut = cut.end();
    let Cut {
        leaves,
        consumed,
        remainder,
        new_objects: mut index_objects,
    } = cut;
    if let Some(end) = end_of_cut {
        if leaves
            .first()
            .is_some_and(|l| l.base_offset < layout.parquet_end)
        {
            return Err(JobError::Read(ReadError::Corrupt(format!(
                "{tp}: flush-object data below the Parquet end {}",
                layout.parquet_end
            ))));
        }
        // Records below the log start are dropped: the file covers from there.
        let base_offset = leaves
            .iter()
            .find(|l| l.last_offset >= log_start)
            .map_or(end - 1, |l| l.base_offset.max(log_start));
        let (topic, partition) = (tp.topic.to_string(), tp.partition);
        let aborted: Vec<AbortedTxn> = leaves.iter().flat_map(|l| l.aborted.clone()).collect();
        let written = tokio::task::spawn_blocking(move || {
            convert::write_file(
                &topic,
                partition,
                &leaves,
                &sections,
                log_start,
                json_values,
            )
        })
        .await
        .map_err(|e| JobError::Task(e.to_string()))??;
        if let Some((bytes, summary)) = written {
            let parquet = upload_file(
                ctx,
                &tp,
                (base_offset, end - 1),
                (bytes, &summary),
                &aborted,
            )
            .await?;
            layout.files.push(parquet.clone());
            file = Some(parquet);
        }
        layout.parquet_end = end;
    }
    layout.compacted_ms = ctx.clock.now_ms();
    index_objects.extend(layout::bound(&mut layout, ctx.clock.now_ms()));
    let swap = Swap {
        topic: tp.topic.to_string(),
        partition: tp.partition,
        topic_create_revision,
        layout_revision: snapshot.layout_revision,
        layout: layout.clone(),
        consumed,
        remainder,
    };
    let uploaded: Vec<&str> = file.iter().map(|f| f.object.as_str()).collect();
    commit(ctx, &tp, swap, index_objects, &uploaded).await?;
    tracing::info!(
        partition = %tp,
        parquet_end = layout.parquet_end,
        file = file.as_ref().map(|f| f.object.as_str()),
        rows = file.as_ref().map_or(0, |f| f.rows),
        "compacted into parquet"
    );
    Ok(Outcome {
        parquet_end: layout.parquet_end,
        file,
        whole,
    })
}
