//! The `skiff` binary.

mod admin;
mod api;
mod compactor_http;
mod config;
mod console;
mod doctor;
mod frame;
mod group;
mod http;
mod http_auth;
mod http_listener;
mod low_watermark;
mod memory;
mod metrics;
mod retention;
mod security;
mod server;
mod storage;
mod txn;
mod windows;

use anyhow::Context;
use api::{Broker, Limits, Node, ProducerIds, StaticBrokerConfigs, TopicDefaults};
use clap::Parser;
use config::{Cli, Command, CompactorCommandArgs, LogFormat, LoggingArgs, ServeArgs};
use skiff_compactor::Compactor;
use skiff_tiering::cluster::controller::Controller;
use skiff_tiering::cluster::membership::{self, Membership};
use skiff_tiering::keys::{BrokerRecord, ListenerEndpoint};
use skiff_tiering::log::section_cache::SectionCache;
use skiff_tiering::{Clock, Log, LogConfig, SystemClock};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().collect();
    config::load_config_file_into_env(&args)?;
    let cli = Cli::parse_from(&args);
    if matches!(cli.command, Command::Serve(_) | Command::Compactor(_)) {
        apply_allocator_settings(&args);
    }
    match cli.command {
        Command::Serve(serve_args) => {
            serve_args.validate()?;
            init_tracing(&serve_args.logging);
            apply_process_settings(&serve_args.process);
            runtime()?.block_on(serve(*serve_args))
        }
        Command::Compactor(compactor_args) => {
            compactor_args.validate()?;
            init_tracing(&compactor_args.logging);
            apply_process_settings(&compactor_args.process);
            runtime()?.block_on(run_compactor(*compactor_args))
        }
        Command::Doctor(args) => admin_command(doctor::run(*args)),
        Command::Topic(command) => admin_command(admin::topic(command)),
        Command::Group(command) => admin_command(admin::group(command)),
        Command::Cluster(command) => admin_command(admin::cluster(command)),
        Command::User(command) => admin_command(admin::user::run(command)),
        Command::Acl(command) => admin_command(admin::acl::run(command)),
        Command::Produce(command) => admin_command(admin::produce(command)),
        Command::Consume(command) => admin_command(admin::consume(command)),
    }
}

/// How long (ms) the allocator keeps memory nothing uses before giving it back to the system:
/// mimalloc's own default is 1 s, and the broker's large buffers (flush objects, request
/// frames, object reads) are freed and allocated again at a steady rate, so at 1 s their pages
/// went back and were faulted in again (zeroed) when next used — twice the page faults per GiB
/// and ~9 % more produce CPU than with 10 s (bench/RESULTS.md). What is kept stays within
/// the broker's memory budgets, which bound what it allocates.
const ALLOCATOR_PURGE_DELAY_MS: &str = "10000";

/// mimalloc reads its options from the environment when the process loads, before `main`: a
/// long-running command started without `MIMALLOC_PURGE_DELAY` runs itself again with it set
/// (the same process id and arguments). An operator's own value is kept; if the binary cannot
/// be run again, this process goes on with the allocator's defaults.
fn apply_allocator_settings(args: &[std::ffi::OsString]) {
    const VARIABLE: &str = "MIMALLOC_PURGE_DELAY";
    #[cfg(unix)]
    if std::env::var_os(VARIABLE).is_none() {
        use std::os::unix::process::CommandExt;
        let Ok(binary) = std::env::current_exe() else {
            return;
        };
        let mut command = std::process::Command::new(binary);
        if let Some((arg0, rest)) = args.split_first() {
            command.arg0(arg0).args(rest);
        }
        // Returns only if it failed.
        let error = command.env(VARIABLE, ALLOCATOR_PURGE_DELAY_MS).exec();
        eprintln!("warning: cannot run again with {VARIABLE} set, going on without: {error}");
    }
    #[cfg(not(unix))]
    let _ = (args, VARIABLE);
}

/// Settings of the process itself, before its threads start.
fn apply_process_settings(process: &config::ProcessArgs) {
    #[cfg(target_os = "linux")]
    if let Err(error) = nix::sys::prctl::set_thp_disable(!process.transparent_huge_pages) {
        tracing::warn!(%error, "cannot set whether memory uses transparent huge pages");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = process;
}

/// Runs an admin command: exit 0 if all of it was done, 1 if anything failed (said on stderr).
fn admin_command(command: impl std::future::Future<Output = admin::Outcome>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(command) {
        Ok(true) => Ok(()),
        Ok(false) => std::process::exit(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_tracing(args: &LoggingArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (store, metadata_counts) = storage::open_metadata_store(&args.store, clock.clone()).await?;
    let (objects, object_store_counts) = storage::open_object_store(&args.store)?;
    let node_id = match args.node_id {
        Some(id) => id,
        None if args.store.etcd_endpoints.is_some() => membership::allocate_node_id(&*store)
            .await
            .context("cannot allocate a node id through etcd")?,
        None => 1,
    };

    // Every Kafka listener, bound, with the address clients are told for it.
    let mut listeners = Vec::new();
    for spec in args.kafka_listeners()? {
        let socket = tokio::net::TcpListener::bind(spec.bind)
            .await
            .with_context(|| {
                format!(
                    "cannot bind the Kafka listener {} on {}",
                    spec.name, spec.bind
                )
            })?;
        let bound = socket.local_addr()?;
        let (host, port) = spec
            .advertised
            .clone()
            .unwrap_or_else(|| (bound.ip().to_string(), bound.port()));
        listeners.push((spec, socket, bound, host, port));
    }
    let endpoints: Vec<ListenerEndpoint> = listeners
        .iter()
        .map(|(spec, _, _, host, port)| ListenerEndpoint {
            name: spec.name.clone(),
            host: host.clone(),
            port: i32::from(*port),
            security_protocol: spec.protocol.name().to_owned(),
        })
        .collect();
    let (host, port) = (endpoints[0].host.clone(), endpoints[0].port);
    let session_ms = i64::try_from(args.broker_session_timeout_ms).unwrap_or(i64::MAX);
    // A restart after a crash finds its old registration until that session lapses.
    let membership = Arc::new(
        Membership::register(
            store.clone(),
            BrokerRecord {
                node_id,
                host,
                port,
                rack: args.replicas.broker_rack.clone().filter(|r| !r.is_empty()),
                incarnation: String::new(),
                listeners: endpoints.clone(),
                follower_reads: args.replicas.replica_selector_class
                    == config::ReplicaSelector::RackAware,
            },
            session_ms,
            std::time::Duration::from_millis(args.broker_session_timeout_ms * 2 + 2_000),
        )
        .await
        .with_context(|| format!("cannot register node id {node_id}"))?,
    );
    let sections = read_cache(&args).await?;
    let log = Log::open_with_cache(
        store.clone(),
        objects.clone(),
        clock.clone(),
        LogConfig {
            node_id,
            flush_linger_ms: args.flush_linger_ms,
            flush_max_bytes: args.flush_max_bytes,
            flush_max_in_flight: args.flush_max_in_flight,
            buffer_max_bytes: args.produce_buffer_max_bytes,
            recent_cache_max_bytes: args.recent_cache_max_bytes,
            read_cache_max_bytes: args.read_cache_max_bytes,
            index_rollup_fanout: args.index_rollup_fanout,
            producer_id_expiration_ms: args.producer_id_expiration_ms,
            replica_view_refresh_ms: args.replicas.replica_view_refresh_ms,
            replica_views_max: args.replicas.replica_views_max,
            object_commit_timeout_ms: args.compactor.object_commit_timeout_ms,
            ..LogConfig::default()
        },
        sections,
    );
    // The compactor of the embedded default (`--compactor-enable false` where compactors run
    // as their own processes).
    let compactor = args
        .compactor_enable
        .then(|| Compactor::new(store.clone(), objects, clock, args.compactor.settings()));
    let (stop_compactor, compactor_stopped) = tokio::sync::watch::channel(false);
    // The broker serves without its compactor (data stays in flush objects until one runs), so
    // a compactor that dies is logged as an error a human must see, not a reason to stop.
    let compactor_task = compactor.clone().map(|c| {
        tokio::spawn(async move {
            if let Err(error) = tokio::spawn(c.run(compactor_stopped)).await {
                tracing::error!(%error, "the compactor task failed; no compaction until a restart");
            }
        })
    });
    let (stop_controller, controller_stopped) = tokio::sync::watch::channel(false);
    let view = skiff_tiering::cluster::view::ViewCell::default();
    let controller = tokio::spawn(
        Controller::new(store.clone(), log.clone(), membership.clone(), view.clone())
            .run(controller_stopped),
    );

    let groups = Arc::new(group::coordinator::Coordinator::new(
        group::state::GroupSettings {
            initial_rebalance_delay_ms: args.group_initial_rebalance_delay_ms as i64,
            min_session_timeout_ms: args.group_min_session_timeout_ms as i64,
            max_session_timeout_ms: args.group_max_session_timeout_ms as i64,
            max_size: args.group_max_size,
        },
        log.clock().clone(),
    ));
    {
        // Group time moves on its own: sessions expire, rebalance deadlines pass.
        let groups = Arc::downgrade(&groups);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(groups) = groups.upgrade() else {
                    return;
                };
                groups.tick();
            }
        });
    }
    tokio::spawn(group::retention::run(
        store.clone(),
        Arc::downgrade(&groups),
        log.clock().clone(),
        node_id,
        group::retention::OffsetsRetention {
            retention_ms: i64::try_from(args.offsets_retention_minutes.saturating_mul(60_000))
                .unwrap_or(i64::MAX),
            check_interval: std::time::Duration::from_millis(
                args.offsets_retention_check_interval_ms,
            ),
        },
    ));
    tokio::spawn(retention::run(
        log.clone(),
        std::time::Duration::from_millis(args.log_retention_check_interval_ms),
        args.log_retention(),
    ));
    let producer_ids = Arc::new(ProducerIds::new(store.clone()));
    let txn_coordinator = txn::Coordinator::new(
        store.clone(),
        log.clock().clone(),
        producer_ids.clone(),
        txn::TxnSettings {
            max_timeout_ms: args.transaction_max_timeout_ms,
            id_expiration_ms: args.transactional_id_expiration_ms,
            id_max_count: args.transactional_id_max_count,
            check_interval: std::time::Duration::from_millis(
                args.transaction_abort_timed_out_transaction_cleanup_interval_ms,
            ),
        },
    );
    let (stop_transactions, transactions_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(txn::run(
        txn_coordinator.clone(),
        node_id,
        transactions_stopped.clone(),
    ));
    // Markers the coordinators (this broker's or others') ask of the partitions led here.
    tokio::spawn(skiff_tiering::log::markers::run(
        log.clone(),
        transactions_stopped,
    ));
    // ACLs are read before serving, so no request is ever judged on an empty set.
    let authorizer =
        security::authorizer::Authorizer::new(store.clone(), args.authorizer.settings());
    authorizer
        .start()
        .await
        .context("cannot read the ACLs from the metadata store")?;
    let sasl = Arc::new(security::sasl::Authenticator::new(
        store.clone(),
        &args.sasl,
        log.clock().clone(),
    )?);
    sasl.start_key_refresh().await;
    let broker = Arc::new(Broker {
        log: log.clone(),
        groups,
        store: store.clone(),
        node: Node {
            node_id,
            replica_selector: args.replicas.replica_selector_class,
        },
        cluster_id: args.cluster_id.clone(),
        limits: Limits {
            max_connections: args.max_connections,
            connection_max_inflight_requests: args.connection_max_inflight_requests,
            socket_request_max_bytes: args.socket_request_max_bytes,
            message_max_bytes: args.message_max_bytes,
            fetch_max_bytes: args.fetch_max_bytes,
            connections_max_idle: std::time::Duration::from_millis(args.connections_max_idle_ms),
            connection_write_timeout: std::time::Duration::from_millis(
                args.connection_write_timeout_ms,
            ),
            offset_metadata_max_bytes: args.offset_metadata_max_bytes,
        },
        budgets: Arc::new(memory::Budgets::new(args.budget_settings())),
        topic_defaults: TopicDefaults {
            auto_create_topics_enable: args.auto_create_topics_enable,
            num_partitions: args.num_partitions,
            message_timestamp_type: args.log_message_timestamp_type,
            retention: args.log_retention(),
        },
        static_configs: StaticBrokerConfigs::new(
            &args,
            listeners
                .iter()
                .map(|(spec, _, bound, _, _)| format!("{}://{bound}", spec.name))
                .collect::<Vec<_>>()
                .join(","),
            endpoints
                .iter()
                .map(|e| format!("{}://{}:{}", e.name, e.host, e.port))
                .collect::<Vec<_>>()
                .join(","),
        ),
        producer_ids,
        txn: txn_coordinator,
        view,
        object_store_counts,
        metadata_counts,
        windows: Default::default(),
        flush_window_min_bytes: args.flush_window_min_bytes,
        metrics: metrics::Metrics::new(args.metrics_topic_labels),
        compactor: compactor.clone(),
        sasl,
        authorizer,
    });

    // SSL listeners ask for client certificates as --ssl-client-auth says; SASL_SSL ones
    // authenticate with SASL.
    let ssl = listeners
        .iter()
        .any(|(spec, ..)| spec.protocol == config::SecurityProtocol::Ssl)
        .then(|| security::tls::ReloadingAcceptor::reloading(&args.tls, true))
        .transpose()?;
    let sasl_ssl = listeners
        .iter()
        .any(|(spec, ..)| spec.protocol == config::SecurityProtocol::SaslSsl)
        .then(|| security::tls::ReloadingAcceptor::reloading(&args.tls, false))
        .transpose()?;
    let http_spec = args.http_listener()?;
    let http_bind = http_spec.bind;
    let http_listener = tokio::net::TcpListener::bind(http_bind)
        .await
        .with_context(|| format!("cannot bind the HTTP admin listener on {http_bind}"))?;
    let principals = Arc::new(security::principal::PrincipalMapper::parse(
        &args.tls.ssl_principal_mapping_rules,
    )?);
    // HTTPS serves the Kafka listeners' certificate: with the SASL_SSL listeners' acceptor when
    // it asks for no client certificate either.
    let https = match http_spec.tls_settings(&args.tls)? {
        None => None,
        Some(tls) if !config::asks_certificates(Some(&tls)) && sasl_ssl.is_some() => {
            sasl_ssl.clone()
        }
        Some(tls) => Some(security::tls::ReloadingAcceptor::reloading(&tls, true)?),
    };
    let shutdown = CancellationToken::new();
    let http = {
        let shutdown = shutdown.clone();
        // The console acts as a Kafka client of this broker's own listeners: PLAINTEXT for
        // anonymous callers, SASL_PLAINTEXT (else SASL_SSL) as the caller who logged in
        // (`http_auth`).
        let local = |protocol: config::SecurityProtocol| {
            listeners
                .iter()
                .find(|(spec, ..)| spec.protocol == protocol)
                .map(|(_, _, bound, _, _)| match *bound {
                    bound if bound.ip().is_unspecified() => format!("127.0.0.1:{}", bound.port()),
                    bound => bound.to_string(),
                })
        };
        let local_kafka = console::LocalKafka {
            plaintext: local(config::SecurityProtocol::Plaintext),
            sasl_plaintext: local(config::SecurityProtocol::SaslPlaintext),
            sasl_ssl: local(config::SecurityProtocol::SaslSsl).zip(sasl_ssl.clone()),
            mechanisms: args.sasl.sasl_enabled_mechanisms.clone(),
            truststore: args.tls.ssl_truststore_location.clone(),
        };
        // The console reads it for every connection to another broker: a file it cannot use
        // fails the start, not the console's requests later.
        if let (Some(_), Some(path)) = (&local_kafka.sasl_ssl, &local_kafka.truststore) {
            admin::security::ca_roots(path).context("--ssl-truststore-location")?;
        }
        let http_authentication =
            args.http_authentication() == config::HttpAuthentication::Required;
        let console_listener = if http_authentication {
            local_kafka
                .sasl_plaintext
                .as_ref()
                .or(local_kafka.sasl_ssl.as_ref().map(|(address, _)| address))
        } else {
            local_kafka.plaintext.as_ref()
        };
        if console_listener.is_none() {
            tracing::warn!(
                http_authentication,
                "the console's topic, group and record pages need a {} Kafka listener",
                if http_authentication {
                    "SASL_PLAINTEXT or SASL_SSL"
                } else {
                    "PLAINTEXT"
                }
            );
        }
        let compactor_routes = compactor_http::routes(store.clone(), compactor.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                broker.authorizer.clone(),
                http::require_describe_cluster,
            ));
        let app = http::router(broker.clone())
            .merge(compactor_routes)
            .merge(console::routes(local_kafka))
            .layer(axum::middleware::from_fn_with_state(
                http_auth::HttpAuth::new(
                    broker.sasl.clone(),
                    log.clock().clone(),
                    {
                        let broker = broker.clone();
                        Arc::new(move |scheme, ok| broker.metrics.http_authentication(scheme, ok))
                    },
                    http_authentication,
                ),
                http_auth::authenticate,
            ));
        let https = https.map(|acceptor| http_listener::Https {
            acceptor,
            principals: principals.clone(),
            handshake_failed: {
                let broker = broker.clone();
                Arc::new(move || broker.metrics.tls_handshake_failed())
            },
        });
        tokio::spawn(async move {
            let served = http_listener::serve(http_listener, https, app, shutdown).await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP admin server failed");
            }
        })
    };
    let kafka_listeners = listeners
        .iter()
        .map(|(spec, _, bound, _, _)| format!("{}://{bound}", spec.name))
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        kafka = %kafka_listeners,
        http = %http_bind,
        data_dir = %args.store.data_dir.display(),
        node_id,
        "skiff broker started"
    );
    let close_connections = CancellationToken::new();
    let mut kafka = Vec::new();
    for (spec, socket, _, _, _) in listeners {
        let context = server::ListenerContext {
            info: Arc::new(security::ListenerInfo {
                name: spec.name.as_str().into(),
                protocol: spec.protocol,
            }),
            tls: match spec.protocol {
                config::SecurityProtocol::Ssl => ssl.clone(),
                config::SecurityProtocol::SaslSsl => sasl_ssl.clone(),
                _ => None,
            },
            principals: principals.clone(),
        };
        kafka.push(tokio::spawn(server::serve(
            socket,
            context,
            broker.clone(),
            shutdown.clone(),
            close_connections.clone(),
        )));
    }
    drop(broker);

    let mut controller = controller;
    let stop = tokio::select! {
        _ = wait_for_signal() => Stop::Signal,
        _ = displacement(&membership) => Stop::Displaced,
        _ = log.flusher_failed() => Stop::Failed("the flusher task ended"),
        _ = &mut controller => Stop::Failed("the controller task ended"),
    };
    if let Stop::Failed(what) = stop {
        // This broker can no longer make appends durable or keep its claims: give up its
        // session at once so other brokers take its partitions over, and exit non-zero.
        tracing::error!(
            reason = what,
            "broker cannot go on; leaving the cluster and exiting"
        );
        shutdown.cancel();
        close_connections.cancel();
        membership.deregister().await;
        anyhow::bail!("{what} unexpectedly; see the log above");
    }
    let displaced = matches!(stop, Stop::Displaced);
    tracing::info!("shutting down: flushing buffered produce data, then leaving the cluster");
    // Stop taking connections and appends, commit what was accepted and answer it, and only
    // then close connections: a producer is never left without the answer to a committed
    // request (which it would resend elsewhere, duplicating it).
    shutdown.cancel();
    log.shutdown().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    close_connections.cancel();
    for listener in kafka {
        let _ = listener.await;
    }
    stop_controller.send_replace(true);
    stop_transactions.send_replace(true);
    let _ = controller.await;
    stop_compactor.send_replace(true);
    if let Some(task) = compactor_task {
        let _ = task.await;
    }
    if displaced {
        // The registration is the other process's now: leave it alone.
        let _ = http.await;
        anyhow::bail!(
            "node id {node_id} was registered by another process while this one was cut off; \
             give every broker its own --node-id"
        );
    }
    // Other brokers see the session end now and claim this broker's partitions at once (before
    // waiting for the admin server, which a slow client could hold up).
    membership.deregister().await;
    let _ = http.await;
    tracing::info!("skiff broker stopped");
    Ok(())
}

/// The read cache: memory and disk. A disk part that cannot be set up in the data dir (a
/// read-only volume, say) leaves the cache in memory with a warning; one in a directory the
/// operator named must work.
async fn read_cache(args: &ServeArgs) -> anyhow::Result<SectionCache> {
    let (memory, disk) = (args.read_cache_max_bytes, args.read_cache_disk_bytes());
    if let Some(dir) = &args.read_cache_dir {
        return SectionCache::hybrid(memory, dir, disk)
            .await
            .map_err(anyhow::Error::msg);
    }
    let dir = args.store.data_dir.join("read-cache");
    match SectionCache::hybrid(memory, &dir, disk).await {
        Ok(cache) => Ok(cache),
        Err(error) => {
            tracing::warn!(
                error,
                "read cache kept in memory only; set --read-cache-dir to a writable directory"
            );
            Ok(SectionCache::new(memory))
        }
    }
}

/// `skiff compactor`: the compactor on its own, with a small HTTP API (`/health`,
/// `/v1/compactor`).
async fn run_compactor(args: CompactorCommandArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (store, metadata_counts) = storage::open_metadata_store(&args.store, clock.clone()).await?;
    let (objects, object_store_counts) = storage::open_object_store(&args.store)?;
    let compactor = Compactor::new(
        store.clone(),
        objects,
        clock.clone(),
        args.compactor.settings(),
    );
    // Who may read the HTTP views: the brokers' users and ACLs.
    let authorizer =
        security::authorizer::Authorizer::new(store.clone(), args.authorizer.settings());
    authorizer
        .start()
        .await
        .context("cannot read the ACLs from the metadata store")?;
    let login_required = args.http_authentication == config::HttpAuthentication::Required;
    let sasl = Arc::new(security::sasl::Authenticator::new(
        store.clone(),
        &args.sasl,
        clock.clone(),
    )?);
    if login_required {
        sasl.start_key_refresh().await;
    }
    let http_spec = args.http_listener()?;
    let http_bind = http_spec.bind;
    let http_listener = tokio::net::TcpListener::bind(http_bind)
        .await
        .with_context(|| format!("cannot bind the HTTP listener on {http_bind}"))?;
    let https = match http_spec.tls_settings(&args.tls)? {
        None => None,
        Some(tls) => Some(http_listener::Https {
            acceptor: security::tls::ReloadingAcceptor::reloading(&tls, true)?,
            principals: Arc::new(security::principal::PrincipalMapper::parse(
                &tls.ssl_principal_mapping_rules,
            )?),
            handshake_failed: Arc::new(|| {}),
        }),
    };
    let shutdown = CancellationToken::new();
    let http = {
        let shutdown = shutdown.clone();
        let app = compactor_http::standalone(
            store,
            compactor.clone(),
            object_store_counts,
            metadata_counts,
            authorizer,
        )
        .layer(axum::middleware::from_fn_with_state(
            http_auth::HttpAuth::new(sasl, clock, Arc::new(|_, _| {}), login_required),
            http_auth::authenticate,
        ));
        tokio::spawn(async move {
            let served = http_listener::serve(http_listener, https, app, shutdown).await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed");
            }
        })
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut task = tokio::spawn(compactor.run(stopped));
    tracing::info!(http = %http_bind, data_dir = %args.store.data_dir.display(), "skiff compactor started");
    let failed = tokio::select! {
        _ = wait_for_signal() => false,
        _ = &mut task => true,
    };
    stop.send_replace(true);
    if !failed {
        let _ = task.await;
    }
    shutdown.cancel();
    let _ = http.await;
    if failed {
        anyhow::bail!("the compactor task ended unexpectedly; see the log above");
    }
    tracing::info!("skiff compactor stopped");
    Ok(())
}

/// Why the broker stops serving.
enum Stop {
    Signal,
    Displaced,
    /// A task the broker cannot work without ended (a panic or a bug).
    Failed(&'static str),
}

/// Resolves when another process has taken this broker's node id (see `Membership::displaced`):
/// this process then shuts down rather than serve as a second broker with the same identity.
async fn displacement(membership: &Membership) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        if membership.displaced() {
            return;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
