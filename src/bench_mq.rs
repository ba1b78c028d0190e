//! `raftmq bench produce` and `raftmq bench consume`: load through the RocketMQ protocol against
//! any cluster a name server knows, with a progress bar and a final JSON line.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use protocol::RemotingCommand;
use protocol::body::{self, TopicRouteData, perm};
use protocol::code::{request, response};
use protocol::header::{
    CommandHeader, CreateTopicRequestHeader, EndTransactionRequestHeader,
    GetRouteInfoRequestHeader, OffsetResponseHeader, PullMessageRequestHeader,
    PullMessageResponseHeader, QueueRequestHeader, SendMessageRequestHeader,
    SendMessageResponseHeader,
};
use protocol::message::{Properties, StoredMessage, decode_offset_msg_id, property, sys_flag};
use remoting::{Client, TcpTransport};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `raftmq bench produce`.
#[derive(clap::Args)]
pub struct ProduceArgs {
    /// Name server address.
    #[arg(long)]
    namesrv: String,
    /// Topic (created with `--queues` queues if it does not exist).
    #[arg(long, default_value = "BenchTopic")]
    topic: String,
    /// Queues of a topic the bench creates.
    #[arg(long, default_value_t = 8)]
    queues: i32,
    /// Body bytes of each message.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Concurrent senders, each with one sync send in flight.
    #[arg(long, default_value_t = 256)]
    producers: usize,
    /// Length of the run (SIGINT ends it early, with the summary).
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Appends `key queue_id queue_offset ack_unix_ms` per acknowledged message.
    #[arg(long)]
    acks_file: Option<PathBuf>,
    /// Each message is a transaction: a half message, then END_TRANSACTION committing it
    /// (oneway, as RocketMQ's producers send it). The summary adds `committed_visible`, the
    /// messages that reached the topic, and `tx_per_sec` from it.
    #[arg(long)]
    transactional: bool,
}

/// The producer group of the bench's transactions (checks for it find no live producer).
const BENCH_GROUP: &str = "bench";

/// Messages in `topic` on `master` across its `queues` queues (the sum of their max offsets).
async fn messages_in_topic(
    client: &Client<TcpTransport>,
    master: &str,
    topic: &str,
    queues: i32,
) -> anyhow::Result<i64> {
    let mut total = 0;
    for queue_id in 0..queues {
        let header = QueueRequestHeader {
            topic: topic.to_string(),
            queue_id,
        };
        let answer = client
            .request(
                master,
                RemotingCommand::request(request::GET_MAX_OFFSET, header.to_ext()),
                CALL_TIMEOUT,
            )
            .await
            .with_context(|| format!("max offset of {topic} queue {queue_id}"))?;
        anyhow::ensure!(
            answer.code == response::SUCCESS,
            "max offset of {topic} queue {queue_id}: {:?}",
            answer.remark
        );
        total += OffsetResponseHeader::from_ext(&answer.ext_fields)?.offset;
    }
    Ok(total)
}

/// Commits the half message a send answered with `answer` (oneway END_TRANSACTION).
async fn commit_half(
    client: &Client<TcpTransport>,
    master: &str,
    topic: &str,
    answer: &SendMessageResponseHeader,
) -> anyhow::Result<()> {
    let (_, commit_log_offset) = decode_offset_msg_id(&answer.msg_id)
        .map_err(|err| anyhow::anyhow!("half message id {}: {err}", answer.msg_id))?;
    let header = EndTransactionRequestHeader {
        topic: Some(topic.to_string()),
        producer_group: BENCH_GROUP.to_string(),
        tran_state_table_offset: answer.queue_offset,
        commit_log_offset,
        commit_or_rollback: 8,
        from_transaction_check: Some(false),
        msg_id: answer.msg_id.clone(),
        transaction_id: answer.transaction_id.clone(),
        bname: None,
    };
    let request = RemotingCommand::request(request::END_TRANSACTION, header.to_ext());
    client.oneway(master, request).await?;
    Ok(())
}

/// Flags of `raftmq bench consume`.
#[derive(clap::Args)]
pub struct ConsumeArgs {
    /// Name server address.
    #[arg(long)]
    namesrv: String,
    /// Topic.
    #[arg(long, default_value = "BenchTopic")]
    topic: String,
    /// Pulls in flight per queue.
    #[arg(long, default_value_t = 1)]
    pullers_per_queue: usize,
    /// Messages per pull.
    #[arg(long, default_value_t = 32)]
    batch: i32,
    /// Longest run; it also ends once every queue is read up to its end at start.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
}

pub(crate) fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The topic's master address and write queue count, from the name server.
pub(crate) struct Route {
    pub master: String,
    pub queues: i32,
}

pub(crate) async fn fetch_route(
    client: &Client<TcpTransport>,
    namesrv: &str,
    topic: &str,
) -> anyhow::Result<Option<Route>> {
    let header = GetRouteInfoRequestHeader {
        topic: topic.into(),
        accept_standard_json_only: Some(true),
    };
    let answer = client
        .request(
            namesrv,
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, header.to_ext()),
            CALL_TIMEOUT,
        )
        .await
        .with_context(|| format!("asking name server {namesrv} for {topic}"))?;
    if answer.code != response::SUCCESS {
        return Ok(None);
    }
    let route: TopicRouteData = body::parse(&answer.body, "route")?;
    let master = route
        .broker_datas
        .iter()
        .find_map(|b| b.broker_addrs.get(&0).cloned());
    let queues = route
        .queue_datas
        .iter()
        .filter(|q| q.perm & perm::WRITE != 0)
        .map(|q| q.write_queue_nums)
        .max()
        .unwrap_or(0);
    Ok(master
        .filter(|_| queues > 0)
        .map(|master| Route { master, queues }))
}

/// The topic's route, creating the topic with `queues` queues on the master `TBW102` names when
/// it has none.
pub(crate) async fn ensure_topic(
    client: &Client<TcpTransport>,
    namesrv: &str,
    topic: &str,
    queues: i32,
) -> anyhow::Result<Route> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut created = false;
    loop {
        if let Some(route) = fetch_route(client, namesrv, topic).await? {
            return Ok(route);
        }
        if !created && let Some(template) = fetch_route(client, namesrv, "TBW102").await? {
            let header = CreateTopicRequestHeader {
                topic: topic.to_string(),
                default_topic: "TBW102".into(),
                read_queue_nums: queues,
                write_queue_nums: queues,
                perm: perm::READ | perm::WRITE,
                topic_filter_type: "SINGLE_TAG".into(),
                topic_sys_flag: None,
                order: false,
                attributes: None,
            };
            let answer = client
                .request(
                    &template.master,
                    RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC, header.to_ext()),
                    CALL_TIMEOUT,
                )
                .await?;
            anyhow::ensure!(
                answer.code == response::SUCCESS,
                "creating {topic}: {:?}",
                answer.remark
            );
            created = true;
        }
        anyhow::ensure!(Instant::now() < deadline, "no route for {topic} after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Counters {
    stop: AtomicBool,
    acked: AtomicU64,
    errors: AtomicU64,
}

pub(crate) fn progress(what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn summary(
    count: u64,
    bytes: u64,
    elapsed: Duration,
    latency: &Histogram<u64>,
    extra: serde_json::Value,
) -> serde_json::Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut out = serde_json::json!({
        "msgs_per_sec": (count as f64 / secs).round(),
        "mib_per_sec": ((bytes as f64 / secs / (1024.0 * 1024.0)) * 100.0).round() / 100.0,
        "p50_us": latency.value_at_quantile(0.50),
        "p99_us": latency.value_at_quantile(0.99),
        "p999_us": latency.value_at_quantile(0.999),
        "messages": count,
        "seconds": (secs * 100.0).round() / 100.0,
    });
    if let (Some(out), serde_json::Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    out
}

/// Sync sends from `--producers` tasks until the duration ends or SIGINT.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    anyhow::ensure!(
        (1..=1024).contains(&args.queues),
        "--queues must be in 1..=1024"
    );
    let (client, _) = Client::new(TcpTransport);
    let client = Arc::new(client);
    let route = Arc::new(RwLock::new(
        ensure_topic(&client, &args.namesrv, &args.topic, args.queues).await?,
    ));
    let counters = Arc::new(Counters {
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let acks_writer = match &args.acks_file {
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            );
            Some(tokio::task::spawn_blocking(move || {
                while let Some(line) = acks_rx.blocking_recv() {
                    let _ = writeln!(file, "{line}");
                }
                file.flush()
            }))
        }
        None => None,
    };
    let visible_before = if args.transactional {
        let (master, queues) = {
            let r = route.read().expect("route");
            (r.master.clone(), r.queues)
        };
        messages_in_topic(&client, &master, &args.topic, queues).await?
    } else {
        0
    };
    let run_id = now_ms();
    let body = bytes::Bytes::from(vec![b'x'; args.message_bytes]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for producer in 0..args.producers {
        let (client, route, counters, body, acks_tx) = (
            client.clone(),
            route.clone(),
            counters.clone(),
            body.clone(),
            acks_tx.clone(),
        );
        let (namesrv, topic, write_acks, transactional) = (
            args.namesrv.clone(),
            args.topic.clone(),
            args.acks_file.is_some(),
            args.transactional,
        );
        tasks.push(tokio::spawn(async move {
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut seq = 0u64;
            while !counters.stop.load(Ordering::Relaxed) {
                let key = format!("{run_id}-{producer}-{seq}");
                let (master, queues) = {
                    let r = route.read().expect("route");
                    (r.master.clone(), r.queues)
                };
                let mut properties = Properties::default();
                properties.set(property::KEYS, key.clone());
                properties.set(property::UNIQ_KEY, key.clone());
                if transactional {
                    properties.set(property::TRAN_MSG, "true");
                    properties.set(property::PGROUP, BENCH_GROUP);
                }
                let header = SendMessageRequestHeader {
                    producer_group: BENCH_GROUP.into(),
                    topic: topic.clone(),
                    default_topic: "TBW102".into(),
                    default_topic_queue_nums: queues,
                    queue_id: ((producer as u64 + seq) % queues as u64) as i32,
                    sys_flag: if transactional {
                        sys_flag::TRANSACTION_PREPARED
                    } else {
                        0
                    },
                    born_timestamp: now_ms() as i64,
                    flag: 0,
                    properties: Some(properties.encode()),
                    ..Default::default()
                };
                let request = RemotingCommand::request(request::SEND_MESSAGE_V2, header.to_v2())
                    .with_body(body.clone());
                let sent = Instant::now();
                let answer = client.request(&master, request, CALL_TIMEOUT).await;
                match answer {
                    Ok(answer) if answer.code == response::SUCCESS => {
                        let sent_header = SendMessageResponseHeader::from_ext(&answer.ext_fields);
                        if transactional {
                            let committed = match &sent_header {
                                Ok(h) => commit_half(&client, &master, &topic, h).await,
                                Err(err) => Err(anyhow::anyhow!("send answer: {err}")),
                            };
                            if let Err(err) = committed {
                                tracing::debug!(cause = %err, "commit failed");
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                                seq += 1;
                                continue;
                            }
                        }
                        let _ = latency.record(sent.elapsed().as_micros() as u64);
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                        if write_acks && let Ok(h) = &sent_header {
                            let _ = acks_tx.send(format!(
                                "{key} {} {} {}",
                                h.queue_id,
                                h.queue_offset,
                                now_ms()
                            ));
                        }
                        seq += 1;
                    }
                    other => {
                        // Not the master any more, or gone: ask the name server again at once.
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        if let Err(err) = &other {
                            tracing::debug!(cause = %err, "send failed");
                            client.forget(&master).await;
                        }
                        if let Ok(Some(fresh)) = fetch_route(&client, &namesrv, &topic).await {
                            *route.write().expect("route") = fresh;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            latency
        }));
    }
    drop(acks_tx);
    let bar = progress("producing");
    let deadline = started + Duration::from_secs(args.duration_secs);
    loop {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let acked = counters.acked.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{acked} acked, {:.0} msgs/s, {} errors",
            acked as f64 / secs,
            counters.errors.load(Ordering::Relaxed)
        ));
        if Instant::now() >= deadline {
            break;
        }
    }
    counters.stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        latency.add(task.await?)?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    if let Some(writer) = acks_writer {
        writer.await??;
    }
    let acked = counters.acked.load(Ordering::Relaxed);
    let mut extra = serde_json::json!({"errors": counters.errors.load(Ordering::Relaxed), "producers": args.producers});
    if args.transactional {
        let visible =
            committed_visible(&client, &route, &args.topic, visible_before, acked).await?;
        extra["committed_visible"] = visible.into();
        extra["tx_per_sec"] = (visible as f64 / elapsed.as_secs_f64().max(1e-9))
            .round()
            .into();
    }
    let out = summary(
        acked,
        acked * args.message_bytes as u64,
        elapsed,
        &latency,
        extra,
    );
    println!("{out}");
    Ok(())
}

/// How many of the run's `committed` transactions reached the topic: commits are oneway, so
/// the count is polled until it reaches `committed` or stops growing for 2 s.
async fn committed_visible(
    client: &Client<TcpTransport>,
    route: &RwLock<Route>,
    topic: &str,
    before: i64,
    committed: u64,
) -> anyhow::Result<u64> {
    let (master, queues) = {
        let r = route.read().expect("route");
        (r.master.clone(), r.queues)
    };
    let mut last = (-1i64, Instant::now());
    loop {
        let visible = messages_in_topic(client, &master, topic, queues).await? - before;
        let visible = u64::try_from(visible).unwrap_or(0);
        if visible >= committed {
            return Ok(visible);
        }
        if visible as i64 != last.0 {
            last = (visible as i64, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            return Ok(visible);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pulls every queue from its start until it reaches the end it had when the run began.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.pullers_per_queue == 1,
        "--pullers-per-queue above 1 is not supported yet"
    );
    let (client, _) = Client::new(TcpTransport);
    let client = Arc::new(client);
    let header = GetRouteInfoRequestHeader {
        topic: args.topic.clone(),
        accept_standard_json_only: Some(true),
    };
    let answer = client
        .request(
            &args.namesrv,
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, header.to_ext()),
            CALL_TIMEOUT,
        )
        .await?;
    anyhow::ensure!(
        answer.code == response::SUCCESS,
        "no route for {}: {:?}",
        args.topic,
        answer.remark
    );
    let route: TopicRouteData = body::parse(&answer.body, "route")?;
    let mut queues = BTreeMap::new();
    for data in &route.queue_datas {
        let broker = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == data.broker_name)
            .and_then(|b| {
                b.broker_addrs
                    .get(&0)
                    .or_else(|| b.broker_addrs.values().next())
            })
            .context("a broker address")?;
        for queue in 0..data.read_queue_nums {
            queues.insert((data.broker_name.clone(), queue), broker.clone());
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for ((_, queue_id), addr) in queues {
        let (client, stop, counted, topic, batch) = (
            client.clone(),
            stop.clone(),
            counted.clone(),
            args.topic.clone(),
            args.batch,
        );
        tasks.push(tokio::spawn(async move {
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let (mut offset, mut end, mut bytes) = (0i64, None::<i64>, 0u64);
            while !stop.load(Ordering::Relaxed) && end.is_none_or(|e| offset < e) {
                let header = PullMessageRequestHeader {
                    consumer_group: "bench-consumer".into(),
                    topic: topic.clone(),
                    queue_id,
                    queue_offset: offset,
                    max_msg_nums: batch,
                    sys_flag: 0,
                    commit_offset: 0,
                    suspend_timeout_millis: 0,
                    subscription: None,
                    sub_version: 0,
                    expression_type: None,
                    max_msg_bytes: None,
                };
                let sent = Instant::now();
                let Ok(answer) = client
                    .request(
                        &addr,
                        RemotingCommand::request(request::PULL_MESSAGE, header.to_ext()),
                        CALL_TIMEOUT,
                    )
                    .await
                else {
                    break;
                };
                let _ = latency.record(sent.elapsed().as_micros() as u64);
                let Ok(h) = PullMessageResponseHeader::from_ext(&answer.ext_fields) else {
                    break;
                };
                end.get_or_insert(h.max_offset);
                if answer.code == response::SUCCESS {
                    let n = StoredMessage::decode_all(&answer.body).map_or(0, |m| m.len()) as u64;
                    counted.fetch_add(n, Ordering::Relaxed);
                    bytes += answer.body.len() as u64;
                }
                if answer.code != response::SUCCESS
                    && answer.code != response::PULL_RETRY_IMMEDIATELY
                {
                    break;
                }
                offset = h.next_begin_offset;
            }
            (latency, bytes)
        }));
    }
    let bar = progress("consuming");
    let deadline = started + Duration::from_secs(args.duration_secs);
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let n = counted.load(Ordering::Relaxed);
        bar.set_message(format!(
            "{n} messages, {:.0} msgs/s",
            n as f64 / started.elapsed().as_secs_f64().max(1e-9)
        ));
        if Instant::now() >= deadline {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut bytes = 0;
    for task in tasks {
        let (l, b) = task.await?;
        latency.add(l)?;
        bytes += b;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    println!(
        "{}",
        summary(
            counted.load(Ordering::Relaxed),
            bytes,
            elapsed,
            &latency,
            serde_json::json!({})
        )
    );
    Ok(())
}
