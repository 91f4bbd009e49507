//! The settings as clap, the environment and the config file make them.

use super::shared::Secret;
use super::*;

#[test]
fn listeners_accept_kafka_spelling() {
    assert_eq!(
        parse_listener("PLAINTEXT://127.0.0.1:9092").expect("parse"),
        "127.0.0.1:9092".parse::<SocketAddr>().expect("addr")
    );
    assert!(parse_listener("nonsense").is_err());
}

#[test]
fn http_listeners_say_whether_they_serve_https() {
    let bind: SocketAddr = "127.0.0.1:9644".parse().expect("addr");
    for (given, tls) in [
        ("127.0.0.1:9644", false),
        ("http://127.0.0.1:9644", false),
        ("HTTPS://localhost:9644", true),
        (" https://127.0.0.1:9644 ", true),
    ] {
        assert_eq!(
            HttpListener::parse(given).expect(given),
            HttpListener { bind, tls },
            "{given}"
        );
    }
    for bad in ["ftp://127.0.0.1:9644", "https://", "https://nowhere"] {
        assert!(HttpListener::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_compactor_command_takes_its_own_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("compactor.toml");
    std::fs::write(
        &path,
        "\"compactor.freshness.ms\" = 5000\netcd_endpoints = \"http://etcd:2379\"\n",
    )
    .expect("write");
    let mut pairs = read_config_file(&path, "compactor").expect("read");
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            ("SKIFF_COMPACTOR_FRESHNESS_MS".to_owned(), "5000".to_owned()),
            (
                "SKIFF_ETCD_ENDPOINTS".to_owned(),
                "http://etcd:2379".to_owned()
            ),
        ]
    );
    // A broker setting is not a compactor's.
    std::fs::write(&path, "flush-linger-ms = 20\n").expect("write");
    assert!(read_config_file(&path, "compactor").is_err());
    let cli = Cli::try_parse_from(["skiff", "compactor", "--compactor-freshness-ms", "500"])
        .expect("parse");
    let Command::Compactor(args) = cli.command else {
        panic!("parsed as compactor")
    };
    assert!(args.validate().is_err(), "a freshness under 1 s is refused");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let cli = Cli::try_parse_from(["skiff", "serve", "--s3-secret-access-key", "hunter2"])
        .expect("parse");
    let Command::Serve(args) = cli.command else {
        panic!("parsed as serve")
    };
    assert_eq!(
        args.store.s3_secret_access_key.as_ref().map(Secret::expose),
        Some("hunter2")
    );
    assert!(!format!("{args:?}").contains("hunter2"));
}

#[test]
fn defaults_validate() {
    let cli = Cli::try_parse_from(["skiff", "serve"]).expect("parse");
    let Command::Serve(args) = cli.command else {
        panic!("parsed as serve")
    };
    args.validate().expect("defaults are valid");
    assert_eq!(args.flush_linger_ms, 250);
    assert!(args.auto_create_topics_enable);
}

#[test]
fn the_read_cache_disk_part_is_for_buckets() {
    let serve = |flags: &[&str]| {
        let cli = Cli::try_parse_from(["skiff", "serve"].iter().chain(flags)).expect("parse");
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve")
        };
        args.read_cache_disk_bytes()
    };
    assert_eq!(
        serve(&[]),
        0,
        "embedded: the objects are local files already"
    );
    assert_eq!(serve(&["--object-store-url", "s3://b/p"]), 1 << 30);
    assert_eq!(serve(&["--read-cache-disk-bytes", "4096"]), 4096);
    assert_eq!(
        serve(&[
            "--object-store-url",
            "s3://b/p",
            "--read-cache-disk-bytes",
            "0"
        ]),
        0
    );
}

#[test]
fn the_replica_selector_takes_our_names_and_kafkas_classes() {
    for (value, expected) in [
        ("leader", ReplicaSelector::Leader),
        ("rack-aware", ReplicaSelector::RackAware),
        (
            "org.apache.kafka.common.replica.RackAwareReplicaSelector",
            ReplicaSelector::RackAware,
        ),
    ] {
        let args = serve_args(&["--replica-selector-class", value]);
        assert_eq!(args.replicas.replica_selector_class, expected, "{value}");
    }
    assert!(
        Cli::try_parse_from(["skiff", "serve", "--replica-selector-class", "nearest"]).is_err()
    );
    assert_eq!(
        serve_args(&[]).replicas.replica_selector_class,
        ReplicaSelector::Leader
    );
}

fn serve_args(flags: &[&str]) -> ServeArgs {
    let cli = Cli::try_parse_from(["skiff", "serve"].iter().chain(flags)).expect("parse");
    let Command::Serve(args) = cli.command else {
        panic!("parsed as serve")
    };
    *args
}
