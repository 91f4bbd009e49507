//! The contract every [`MetadataStore`] implementation must pass: etcd's semantics for revisions,
//! compares, prefix ranges, watches and leases, as far as Skiff relies on them.
//!
//! `advance_ms` lets the store's time pass (moves a manual clock for the embedded store, waits
//! for real with etcd). Every check uses keys under its own prefix so runs against a shared server don't clash.

use super::{
    Compare, CompareOp, CompareTarget, MetadataError, MetadataStore, Read, Txn, TxnOp, WatchEvent,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::time::Duration;

/// Lets `ms` milliseconds of the store's time pass.
pub type Advance<'a> = &'a (dyn Fn(i64) -> BoxFuture<'static, ()> + Sync);

pub async fn run_all(store: &dyn MetadataStore, advance_ms: Advance<'_>) {
    put_get_and_revisions(store).await;
    range_prefix_is_ordered_and_bounded(store).await;
    range_prefix_returns_many_keys_whole(store).await;
    range_prefix_returns_more_than_a_response_holds(store).await;
    read_many_reads_keys_and_prefixes_at_one_revision(store).await;
    compares_guard_transactions(store).await;
    delete_prefix_removes_only_the_prefix(store).await;
    watch_sees_changes_under_prefix(store).await;
    leases_expire_and_take_their_keys(store, advance_ms).await;
}

async fn put(store: &dyn MetadataStore, key: &str, value: &str) -> i64 {
    let outcome = store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::put(key, value.to_owned())]))
        .await
        .expect("put");
    assert!(outcome.succeeded);
    outcome.revision
}

async fn put_get_and_revisions(store: &dyn MetadataStore) {
    let first = put(store, "/contract/kv/a", "1").await;
    let second = put(store, "/contract/kv/a", "2").await;
    assert!(second > first, "revision must grow: {first} then {second}");
    let kv = store
        .get("/contract/kv/a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(kv.value.as_ref(), b"2");
    assert_eq!(kv.version, 2);
    assert_eq!(kv.create_revision, first);
    assert_eq!(kv.mod_revision, second);
    assert!(store
        .get("/contract/kv/missing")
        .await
        .expect("get")
        .is_none());
}

async fn range_prefix_is_ordered_and_bounded(store: &dyn MetadataStore) {
    for key in [
        "/contract/range/b",
        "/contract/range/a",
        "/contract/range/c",
    ] {
        put(store, key, key).await;
    }
    put(store, "/contract/range0", "sibling, not under the prefix").await;
    let all = store
        .range_prefix("/contract/range/", 0)
        .await
        .expect("range");
    let keys: Vec<_> = all.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/contract/range/a",
            "/contract/range/b",
            "/contract/range/c"
        ]
    );
    let two = store
        .range_prefix("/contract/range/", 2)
        .await
        .expect("range");
    assert_eq!(two.len(), 2);
    assert_eq!(two[1].key, "/contract/range/b");
}

/// More keys than one etcd range page holds: all of them, in order, and a limit that ends
/// inside a later page.
async fn range_prefix_returns_many_keys_whole(store: &dyn MetadataStore) {
    let prefix = "/contract/many/";
    let count = 2_500;
    put_numbered(store, prefix, count, |i| Bytes::from(format!("v{i}"))).await;
    let all = store.range_prefix(prefix, 0).await.expect("range");
    assert_eq!(all.len(), count);
    for (i, kv) in all.iter().enumerate() {
        assert_eq!(kv.key, numbered_key(prefix, i));
        assert_eq!(kv.value, format!("v{i}"));
    }
    let bounded = store.range_prefix(prefix, 1_234).await.expect("range");
    assert_eq!(bounded.len(), 1_234);
    assert_eq!(bounded[1_233].key, numbered_key(prefix, 1_233));
}

/// Values totalling 6 MiB, more than etcd answers in one response by default (4 MiB, also
/// gRPC's default receive limit): read back whole and in order. Written in transactions within
/// etcd's limits (128 operations, 1.5 MiB per request).
async fn range_prefix_returns_more_than_a_response_holds(store: &dyn MetadataStore) {
    let prefix = "/contract/large/";
    let value_bytes = 128 << 10;
    let count = 48; // 6 MiB
    let value = |i: usize| {
        let mut value = vec![b'.'; value_bytes];
        let tag = format!("value {i} ");
        value[..tag.len()].copy_from_slice(tag.as_bytes());
        Bytes::from(value)
    };
    put_numbered(store, prefix, count, value).await;
    let all = store.range_prefix(prefix, 0).await.expect("range");
    assert_eq!(all.len(), count);
    for (i, kv) in all.iter().enumerate() {
        assert_eq!(kv.key, numbered_key(prefix, i));
        assert!(kv.value == value(i), "value of {} differs", kv.key);
    }
}

fn numbered_key(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:06}")
}

/// Puts `count` numbered keys in transactions of at most 100 operations and 1 MiB.
async fn put_numbered(
    store: &dyn MetadataStore,
    prefix: &str,
    count: usize,
    value: impl Fn(usize) -> Bytes,
) {
    let (ops_max, bytes_max) = (100.min(store.max_txn_ops()), 1 << 20);
    let mut ops = Vec::new();
    let mut bytes = 0;
    for i in 0..count {
        let value = value(i);
        if !ops.is_empty() && (ops.len() == ops_max || bytes + value.len() > bytes_max) {
            let txn = Txn::when(vec![]).and_then(std::mem::take(&mut ops));
            assert!(store.txn(txn).await.expect("put batch").succeeded);
            bytes = 0;
        }
        bytes += value.len();
        ops.push(TxnOp::put(numbered_key(prefix, i), value));
    }
    let txn = Txn::when(vec![]).and_then(ops);
    assert!(store.txn(txn).await.expect("put batch").succeeded);
}

async fn read_many_reads_keys_and_prefixes_at_one_revision(store: &dyn MetadataStore) {
    put(store, "/contract/many/state", "s1").await;
    put(store, "/contract/many/index/2", "i2").await;
    put(store, "/contract/many/index/1", "i1").await;
    put(store, "/contract/many/indexes", "not under the prefix").await;
    // A write of two keys at once: a reader sees both or neither.
    let last = store
        .txn(Txn::when(vec![]).and_then(vec![
            TxnOp::put("/contract/many/state", "s2"),
            TxnOp::put("/contract/many/index/3", "i3"),
        ]))
        .await
        .expect("txn")
        .revision;
    let found = store
        .read_many(&[
            Read::Key("/contract/many/state".into()),
            Read::Prefix("/contract/many/index/".into()),
            Read::Key("/contract/many/missing".into()),
            Read::Prefix("/contract/many/nothing/".into()),
        ])
        .await
        .expect("read_many");
    assert!(found.revision >= last, "{} < {last}", found.revision);
    let values = |i: usize| -> Vec<&[u8]> {
        found.results[i]
            .iter()
            .map(|kv| kv.value.as_ref())
            .collect()
    };
    assert_eq!(found.results.len(), 4);
    assert_eq!(values(0), vec![b"s2".as_slice()]);
    assert_eq!(found.results[0][0].mod_revision, last);
    assert_eq!(
        values(1),
        vec![b"i1".as_slice(), b"i2", b"i3"],
        "in key order"
    );
    assert!(found.results[2].is_empty() && found.results[3].is_empty());
    let none = store.read_many(&[]).await.expect("no reads");
    assert!(none.results.is_empty() && none.revision >= last);
    let too_many = vec![Read::Key("/contract/many/state".into()); store.max_txn_ops() + 1];
    assert!(matches!(
        store.read_many(&too_many).await,
        Err(MetadataError::TooLarge(_))
    ));
}

async fn compares_guard_transactions(store: &dyn MetadataStore) {
    let key = "/contract/txn/k";
    let create = Txn::when(vec![Compare::absent(key)]).and_then(vec![TxnOp::put(key, "v1")]);
    let created = store.txn(create.clone()).await.expect("txn");
    assert!(created.succeeded);
    let again = store.txn(create).await.expect("txn");
    assert!(
        !again.succeeded,
        "create-if-absent must fail when the key exists"
    );

    let kv = store.get(key).await.expect("get").expect("present");
    let stale = Txn::when(vec![Compare::mod_revision(key, kv.mod_revision - 1)])
        .and_then(vec![TxnOp::put(key, "stale")]);
    let mut stale = stale;
    stale.failure = vec![TxnOp::put("/contract/txn/failure-branch", "ran")];
    assert!(!store.txn(stale).await.expect("txn").succeeded);
    assert!(store
        .get("/contract/txn/failure-branch")
        .await
        .expect("get")
        .is_some());
    assert_eq!(
        store
            .get(key)
            .await
            .expect("get")
            .expect("kv")
            .value
            .as_ref(),
        b"v1"
    );

    let fresh = Txn::when(vec![
        Compare::mod_revision(key, kv.mod_revision),
        Compare::value(key, "v1"),
        Compare {
            key: key.into(),
            op: CompareOp::Greater,
            target: CompareTarget::Version(0),
        },
    ])
    .and_then(vec![
        TxnOp::put(key, "v2"),
        TxnOp::put("/contract/txn/other", "x"),
    ]);
    let outcome = store.txn(fresh).await.expect("txn");
    assert!(outcome.succeeded);
    let a = store.get(key).await.expect("get").expect("kv");
    let b = store
        .get("/contract/txn/other")
        .await
        .expect("get")
        .expect("kv");
    assert_eq!(
        a.mod_revision, b.mod_revision,
        "one transaction, one revision"
    );
    assert_eq!(a.mod_revision, outcome.revision);

    let missing_value = Txn::when(vec![Compare::value("/contract/txn/nothing", "")])
        .and_then(vec![TxnOp::put(key, "never")]);
    assert!(!store.txn(missing_value).await.expect("txn").succeeded);
}

async fn delete_prefix_removes_only_the_prefix(store: &dyn MetadataStore) {
    for key in [
        "/contract/del/x/1",
        "/contract/del/x/2",
        "/contract/del/y/1",
    ] {
        put(store, key, "v").await;
    }
    store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::DeletePrefix {
            prefix: "/contract/del/x/".into(),
        }]))
        .await
        .expect("delete");
    assert!(store
        .range_prefix("/contract/del/x/", 0)
        .await
        .expect("range")
        .is_empty());
    assert_eq!(
        store
            .range_prefix("/contract/del/", 0)
            .await
            .expect("range")
            .len(),
        1
    );
    // A range delete is half-open, and may sit next to a put of its start key.
    for key in [
        "/contract/rng/a",
        "/contract/rng/b",
        "/contract/rng/c",
        "/contract/rng/d",
    ] {
        put(store, key, "v").await;
    }
    store
        .txn(Txn::when(vec![]).and_then(vec![
            TxnOp::DeleteRange {
                start: "/contract/rng/a\0".into(),
                end: "/contract/rng/c".into(),
            },
            TxnOp::put("/contract/rng/a", "merged"),
        ]))
        .await
        .expect("range delete");
    let left: Vec<String> = store
        .range_prefix("/contract/rng/", 0)
        .await
        .expect("range")
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        left,
        ["/contract/rng/a", "/contract/rng/c", "/contract/rng/d"]
    );
    // Deleting a missing key is not an error.
    store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::delete("/contract/del/none")]))
        .await
        .expect("delete missing");
}

async fn watch_sees_changes_under_prefix(store: &dyn MetadataStore) {
    let mut watch = store.watch_prefix("/contract/watch/").await.expect("watch");
    put(store, "/contract/unwatched", "x").await;
    put(store, "/contract/watch/a", "1").await;
    store
        .txn(Txn::when(vec![]).and_then(vec![TxnOp::delete("/contract/watch/a")]))
        .await
        .expect("delete");
    match next_event(&mut watch).await {
        WatchEvent::Put(kv) => {
            assert_eq!(kv.key, "/contract/watch/a");
            assert_eq!(kv.value, Bytes::from_static(b"1"));
        }
        other => panic!("expected put, got {other:?}"),
    }
    match next_event(&mut watch).await {
        WatchEvent::Delete { key, .. } => assert_eq!(key, "/contract/watch/a"),
        other => panic!("expected delete, got {other:?}"),
    }
}

async fn leases_expire_and_take_their_keys(store: &dyn MetadataStore, advance_ms: Advance<'_>) {
    let short = store.lease_grant(2_000).await.expect("grant");
    let kept = store.lease_grant(2_000).await.expect("grant");
    let revoked = store.lease_grant(60_000).await.expect("grant");
    let leased = |key: &str, lease| TxnOp::Put {
        key: key.into(),
        value: Bytes::from_static(b"v"),
        lease: Some(lease),
    };
    store
        .txn(Txn::when(vec![]).and_then(vec![
            leased("/contract/lease/short", short),
            leased("/contract/lease/kept", kept),
            leased("/contract/lease/revoked", revoked),
        ]))
        .await
        .expect("txn");
    store.lease_revoke(revoked).await.expect("revoke");
    assert!(store
        .get("/contract/lease/revoked")
        .await
        .expect("get")
        .is_none());

    // Keep `kept` alive across twice its TTL; let `short` lapse.
    for _ in 0..4 {
        advance_ms(1_000).await;
        store.lease_keep_alive(kept).await.expect("keep alive");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store
        .get("/contract/lease/short")
        .await
        .expect("get")
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired lease kept its key"
        );
        advance_ms(200).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store
        .get("/contract/lease/kept")
        .await
        .expect("get")
        .is_some());
    // A lapsed or revoked lease is reported as such: a broker re-registers only on this error.
    let lapsed = store.lease_keep_alive(short).await;
    assert!(
        matches!(lapsed, Err(MetadataError::LeaseNotFound(_))),
        "{lapsed:?}"
    );
    let revoked_again = store.lease_keep_alive(revoked).await;
    assert!(
        matches!(revoked_again, Err(MetadataError::LeaseNotFound(_))),
        "{revoked_again:?}"
    );
    store.lease_revoke(kept).await.expect("revoke");
    let twice = store.lease_revoke(kept).await;
    assert!(
        matches!(twice, Err(MetadataError::LeaseNotFound(_))),
        "{twice:?}"
    );
}

async fn next_event(watch: &mut futures::stream::BoxStream<'static, WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("watch event within 5 s")
        .expect("watch stream open")
}
