//! `raftmq bench schedule`: sends timer messages due over a window, consumes them as they fall
//! due, and reports how late they came (FEATURES-SPEC.md §2; issue 13's benchmark).
//!
//! Message `i` of `N` is due at `start + delay + i × spread / N` (`TIMER_DELIVER_MS`), where
//! `start` is when the sends begin; its body carries the run's id and `i`, so the consumer knows
//! its due time. Consumers pull every queue of the topic from the master with long polling and
//! note when each message arrives. Lateness is arrival − due; an arrival before due is counted
//! `early`, a second arrival of the same message `duplicates`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use protocol::RemotingCommand;
use protocol::code::{request, response};
use protocol::header::{
    CommandHeader, PullMessageRequestHeader, PullMessageResponseHeader, pull_flag,
};
use protocol::message::StoredMessage;
use remoting::{Client, TcpTransport};

use crate::bench_mq::{ensure_topic, fetch_route, now_ms, progress};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pull that finds nothing is held by the broker.
const PULL_SUSPEND: Duration = Duration::from_secs(1);

/// Flags of `raftmq bench schedule`.
#[derive(clap::Args)]
pub struct ScheduleArgs {
    /// Name server address.
    #[arg(long)]
    namesrv: String,
    /// Topic; a new one per run when absent (created with `--queues` queues).
    #[arg(long)]
    topic: Option<String>,
    /// Queues of the topic the bench creates.
    #[arg(long, default_value_t = 8)]
    queues: i32,
    /// Messages to schedule.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// The first message is due this long after the sends begin.
    #[arg(long, default_value_t = 30)]
    delay_secs: u64,
    /// The messages fall due evenly over this window after the first.
    #[arg(long, default_value_t = 5)]
    spread_secs: u64,
    /// Body bytes of each message (at least 16).
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Concurrent senders, each with one sync send in flight.
    #[arg(long, default_value_t = 256)]
    producers: usize,
    /// How long to wait for stragglers after the last message was due.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
}

/// What the consumers saw.
struct Seen {
    /// One flag per message: arrived.
    arrived: Vec<bool>,
    delivered: u64,
    duplicates: u64,
    early: u64,
    lateness_ms: Histogram<u64>,
    first_at: Option<u128>,
    last_at: Option<u128>,
}

pub async fn schedule(args: ScheduleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    anyhow::ensure!(
        args.message_bytes >= 16,
        "--message-bytes must be at least 16"
    );
    let run_id = now_ms() as u64;
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("ScheduleBench{run_id}"));
    let (client, _) = Client::new(TcpTransport);
    let client = Arc::new(client);
    let route = ensure_topic(&client, &args.namesrv, &topic, args.queues).await?;
    let seen = Arc::new(Mutex::new(Seen {
        arrived: vec![false; args.messages as usize],
        delivered: 0,
        duplicates: 0,
        early: 0,
        lateness_ms: Histogram::new_with_bounds(1, 3_600_000, 3)?,
        first_at: None,
        last_at: None,
    }));
    let start = now_ms();
    let due_of = {
        let (n, delay, spread) = (
            args.messages as u128,
            u128::from(args.delay_secs) * 1000,
            u128::from(args.spread_secs) * 1000,
        );
        move |i: u64| start + delay + u128::from(i) * spread / n
    };

    // Consumers first: one long-polling puller per queue, from the queue's start.
    let stop = Arc::new(AtomicBool::new(false));
    let mut pullers = Vec::new();
    for queue_id in 0..route.queues {
        let (client, stop, seen, namesrv, topic) = (
            client.clone(),
            stop.clone(),
            seen.clone(),
            args.namesrv.clone(),
            topic.clone(),
        );
        pullers.push(tokio::spawn(async move {
            let mut offset = 0i64;
            let mut master = None::<String>;
            while !stop.load(Ordering::Relaxed) {
                let addr = match &master {
                    Some(addr) => addr.clone(),
                    None => match fetch_route(&client, &namesrv, &topic).await {
                        Ok(Some(route)) => {
                            master = Some(route.master.clone());
                            route.master
                        }
                        _ => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let header = PullMessageRequestHeader {
                    consumer_group: "bench-schedule".into(),
                    topic: topic.clone(),
                    queue_id,
                    queue_offset: offset,
                    max_msg_nums: 32,
                    sys_flag: pull_flag::SUSPEND,
                    commit_offset: 0,
                    suspend_timeout_millis: PULL_SUSPEND.as_millis() as i64,
                    subscription: None,
                    sub_version: 0,
                    expression_type: None,
                    max_msg_bytes: None,
                };
                let request = RemotingCommand::request(request::PULL_MESSAGE, header.to_ext());
                let answer = client
                    .request(&addr, request, PULL_SUSPEND + CALL_TIMEOUT)
                    .await;
                let at = now_ms();
                let Ok(answer) = answer else {
                    client.forget(&addr).await;
                    master = None;
                    continue;
                };
                let Ok(h) = PullMessageResponseHeader::from_ext(&answer.ext_fields) else {
                    master = None;
                    continue;
                };
                if answer.code == response::SUCCESS {
                    let messages = StoredMessage::decode_all(&answer.body).unwrap_or_default();
                    let mut seen = seen.lock().expect("seen");
                    for message in messages {
                        let body = &message.body;
                        if body.len() < 16 || body[..8] != run_id.to_be_bytes() {
                            continue;
                        }
                        let i = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
                        let Some(slot) = seen.arrived.get_mut(i as usize) else {
                            continue;
                        };
                        if std::mem::replace(slot, true) {
                            seen.duplicates += 1;
                            continue;
                        }
                        seen.delivered += 1;
                        let due = due_of(i);
                        if at < due {
                            seen.early += 1;
                        } else {
                            let _ = seen.lateness_ms.record((at - due) as u64);
                        }
                        seen.first_at.get_or_insert(at);
                        seen.last_at = Some(at);
                    }
                } else if answer.code != response::PULL_NOT_FOUND
                    && answer.code != response::PULL_RETRY_IMMEDIATELY
                {
                    // Not the master any more, or an offset to correct.
                    master = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                offset = h.next_begin_offset.max(offset);
            }
        }));
    }

    // The sends: each sender takes the next index until all are sent.
    let producer = Arc::new(
        client::Producer::start(
            TcpTransport,
            client::ClientConfig::new([args.namesrv.as_str()]),
            client::ProducerConfig::new("bench-schedule-pg"),
        )
        .await?,
    );
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..args.producers {
        let (producer, next, failed, topic) = (
            producer.clone(),
            next.clone(),
            failed.clone(),
            topic.clone(),
        );
        let (messages, bytes) = (args.messages, args.message_bytes);
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    return;
                }
                let mut body = Vec::with_capacity(bytes);
                body.extend_from_slice(&run_id.to_be_bytes());
                body.extend_from_slice(&i.to_be_bytes());
                body.resize(bytes, b'x');
                let message = client::Message::new(topic.clone(), body)
                    .with_deliver_time_ms(due_of(i) as i64);
                if let Err(err) = producer.send(message).await {
                    tracing::warn!(cause = %err, i, "scheduled send failed");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let bar = progress("scheduling");
    let sending = Instant::now();
    while !senders.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = next.load(Ordering::Relaxed).min(args.messages);
        bar.set_message(format!(
            "{sent} sent, {:.0} msgs/s",
            sent as f64 / sending.elapsed().as_secs_f64().max(1e-9)
        ));
    }
    for sender in senders {
        sender.await?;
    }
    let sent_in = sending.elapsed();
    let failed = failed.load(Ordering::Relaxed);
    let sent = args.messages - failed;
    let last_due = due_of(args.messages - 1);
    if now_ms() > due_of(0) {
        tracing::warn!(
            late_ms = (now_ms() - due_of(0)) as u64,
            "the sends took longer than --delay-secs: the first messages were due before all were sent"
        );
    }
    let deadline = last_due + u128::from(args.wait_secs) * 1000;
    loop {
        let delivered = seen.lock().expect("seen").delivered;
        bar.set_message(format!("{delivered} of {sent} delivered"));
        if delivered >= sent || now_ms() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A moment more for duplicates to show, had any been delivered.
    tokio::time::sleep(PULL_SUSPEND).await;
    stop.store(true, Ordering::Relaxed);
    for puller in pullers {
        let _ = puller.await;
    }
    bar.finish_and_clear();
    let seen = seen.lock().expect("seen");
    let window_ms = match (seen.first_at, seen.last_at) {
        (Some(first), Some(last)) => (last - first).max(1) as f64,
        _ => 1.0,
    };
    println!(
        "{}",
        serde_json::json!({
            "sent": sent,
            "send_failed": failed,
            "sent_per_sec": (sent as f64 / sent_in.as_secs_f64().max(1e-9)).round(),
            "delivered": seen.delivered,
            "duplicates": seen.duplicates,
            "early": seen.early,
            "lateness_p50_ms": seen.lateness_ms.value_at_quantile(0.50),
            "lateness_p99_ms": seen.lateness_ms.value_at_quantile(0.99),
            "lateness_max_ms": seen.lateness_ms.max(),
            "delivered_per_sec": (seen.delivered as f64 * 1000.0 / window_ms).round(),
            "topic": topic,
        })
    );
    Ok(())
}
