//! The messaging workload (`--layer broker`): every replica host runs the production stack
//! (ledger, store, broker) over its disk, one host runs the name server, and client hosts run
//! producers that send messages with unique ids over the remoting protocol to whichever broker
//! takes writes, recording each acknowledged (id, queue id, queue offset), and consumers that
//! pull every queue from any replica (followers serve what they applied), recording what they
//! received and any gap or repeat in a queue's offsets. A quarter of the sends are timer
//! messages due up to 2 s later: consumers check none is visible before it is due, and the end
//! of the run that each arrives once. One send in five of the rest is a transaction, settled by
//! its producer's END_TRANSACTION or, when that never comes, by the broker's check, which the
//! producers answer from what they decided.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use broker::{Broker, BrokerConfig};
use dledger::testing::RecordingStateMachine;
use dledger::{ApplyError, CommittedEntry, Ledger, LogId, MemDisk, StateMachine};
use protocol::RemotingCommand;
use protocol::code::{request, response};
use protocol::header::{
    CheckTransactionStateRequestHeader, CommandHeader, EndTransactionRequestHeader,
    PullMessageRequestHeader, PullMessageResponseHeader, SendMessageRequestHeader,
    SendMessageResponseHeader, pull_flag,
};
use protocol::message::{StoredMessage, decode_offset_msg_id, property, sys_flag};
use rand::Rng;
use store::{Store, StoreConfig, StoreMachine};

use crate::cluster::{Applier, Cluster, OpenError, host_name};
use crate::config::{rng, salt};
use crate::oracle::{Consumed, HalfPlace, ScheduledAck, SendAck, body, id_of};
use crate::transport::{SimClock, TurmoilTransport};

/// Client port of every broker.
pub const BROKER_PORT: u16 = 10911;
/// Turmoil host name of the name server.
pub const NAMESRV_HOST: &str = "namesrv";
/// Port of the name server.
pub const NAMESRV_PORT: u16 = 9876;
/// Client hosts running producers.
pub const CLIENT_HOSTS: u64 = 2;
/// The topic the producers send to (auto-created from TBW102).
pub const TOPIC: &str = "SimTopic";
/// Queues of [`TOPIC`].
pub const QUEUES: i32 = 4;
/// Most bytes of one Raft entry's body in the messaging workload: a batch of records.
pub const ENTRY_BODY_BYTES_MAX: u32 = 16 * 1024;
/// How long a producer waits for one answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a broker holds a pull that finds nothing.
const PULL_SUSPEND: Duration = Duration::from_millis(500);
/// Most messages one pull asks for.
const PULL_BATCH: i32 = 32;
/// One send in this many is a timer message.
const SCHEDULED_ONE_IN: u32 = 4;
/// Longest delay a timer message of the workload asks for, ms.
const SCHEDULED_DELAY_MAX_MS: u64 = 2_000;
/// One send in this many (of those not scheduled) is a transaction: a half message, then a
/// commit or a rollback, sometimes sent twice (a retry).
const TRANSACTION_ONE_IN: u32 = 5;
/// The producer group of the workload's transactions.
const PRODUCER_GROUP: &str = "sim-producers";
/// One transaction in this many gets no END_TRANSACTION from its producer (as if it died before
/// answering): the broker's check, answered by any producer of the group, settles it.
const UNANSWERED_ONE_IN: u32 = 6;
/// How often a producer heartbeats every broker, so the brokers know whom to ask.
const PRODUCER_HEARTBEAT: Duration = Duration::from_millis(500);

/// Turmoil host name of client host `k`.
pub fn client_host_name(k: u64) -> String {
    format!("client-{k}")
}

/// The store's settings in the simulation: small files, so runs roll over them.
pub fn store_config(id: u64) -> StoreConfig {
    let mut config = StoreConfig::new(format!("/{}/store", host_name(id)).into());
    config.cq_units_per_file = 256;
    config.index.hash_slots = 64;
    config.index.entries_max = 512;
    config.checkpoint_every = 32;
    config.segment_bytes = crate::config::SIM_SEGMENT_BYTES;
    config
}

/// The store as the state machine, recording what it applied for the ledger's invariants.
pub struct TeeMachine {
    /// The production state machine.
    pub store: StoreMachine<MemDisk>,
    /// What was applied this life.
    pub record: RecordingStateMachine,
}

impl StateMachine for TeeMachine {
    fn apply(&mut self, entry: &CommittedEntry) -> Result<(), ApplyError> {
        self.store.apply(entry)?;
        self.record.apply(entry)
    }

    fn last_applied(&self) -> Option<LogId> {
        self.store.last_applied()
    }

    fn snapshot_point(&self) -> Option<LogId> {
        self.store.snapshot_point()
    }

    fn snapshot(&mut self) -> Option<dledger::Snapshot> {
        self.store.snapshot()
    }

    fn restore(&mut self, snapshot: &dledger::Snapshot) -> Result<(), ApplyError> {
        self.store.restore(snapshot)?;
        // What this life applied before the snapshot is replaced by it.
        self.record.discard()
    }

    fn discard(&mut self) -> Result<(), ApplyError> {
        self.store.discard()?;
        self.record.discard()
    }
}

/// The broker settings of replica `id` in its `incarnation`th life.
pub fn broker_config(cluster: &Cluster, id: u64, incarnation: u64) -> BrokerConfig {
    let advertised = SocketAddr::new(turmoil::lookup(host_name(id)), BROKER_PORT);
    let mut config = BrokerConfig::new(
        "broker-a",
        &format!("0.0.0.0:{BROKER_PORT}"),
        advertised,
        vec![format!("{NAMESRV_HOST}:{NAMESRV_PORT}")],
    );
    config.register_interval = Duration::from_secs(1);
    config.namesrv_timeout = Duration::from_secs(5);
    config.default_topic_queues = QUEUES;
    config.max_message_bytes = 4096;
    config.write_queue = 1024;
    config.batch_records_max = 16;
    config.batch_bytes_max = 8 * 1024;
    config.long_poll_max = Duration::from_secs(1);
    config.client_timeout = Duration::from_secs(10);
    config.clock = Arc::new(SimClock);
    config.seed = Some(cluster.config.seed ^ salt::BROKER ^ (id << 32) ^ incarnation);
    if cluster.mutant == Some(crate::config::Mutant::DeliverEarly) {
        config.mutants.deliver_early_ms = 500;
    }
    if let Some(retention_ms) = cluster.config.retention_ms {
        config.retention.file_reserved = Duration::from_millis(retention_ms);
        config.retention.delete_when = broker::retention::DeleteWhen::EveryHour;
        config.retention.clean_interval = RETENTION_CLEAN_INTERVAL;
    }
    // Disk-full episodes: the cleaner reads the driver's figure every 100 ms. Forced cleaning
    // stays off, so a cut is always of expired segments (`retention_only_expired`).
    config.retention.disk_usage = Arc::new(SimDiskUsage(cluster.disk_used_permille[&id].clone()));
    config.retention.clean_interval = RETENTION_CLEAN_INTERVAL;
    config.retention.clean_forcibly = false;
    if cluster.mutant == Some(crate::config::Mutant::StoreRefusedSends) {
        config.mutants.store_refused_sends = true;
    }
    if cluster.mutant == Some(crate::config::Mutant::CommitWithoutOutcome) {
        config.mutants.commit_without_outcome = true;
    }
    if cluster.mutant == Some(crate::config::Mutant::ChecksUnsent) {
        config.mutants.checks_unsent = true;
    }
    // Checks come soon enough to settle within a run, and are never given up on: a committed
    // transaction must become visible (only retention cutting its half message excuses it).
    config.transactions.timeout = Duration::from_secs(1);
    config.transactions.check_interval = Duration::from_millis(500);
    config.transactions.check_max = u32::MAX;
    if cluster.mutant == Some(crate::config::Mutant::PurgeUnexpired) {
        config.mutants.purge_unexpired = true;
        config.retention.delete_when = broker::retention::DeleteWhen::EveryHour;
        config.retention.clean_interval = RETENTION_CLEAN_INTERVAL;
    }
    config
}

/// A replica's disk usage as the driver sets it.
struct SimDiskUsage(Arc<std::sync::atomic::AtomicU64>);

impl broker::retention::DiskUsage for SimDiskUsage {
    fn used_ratio(&self) -> Option<f64> {
        Some(self.0.load(Ordering::Relaxed) as f64 / 1000.0)
    }
}

/// The cleaner's period in the simulation: several runs per retention period.
const RETENTION_CLEAN_INTERVAL: Duration = Duration::from_millis(100);

/// The messaging layers on every replica: each applies into its message store and runs a
/// broker over it.
#[derive(Default)]
pub struct Messaging {
    /// The name server's registry, once its host runs.
    pub registry: RegistrySlot,
}

impl crate::cluster::Workload for Messaging {
    fn entry_body_bytes_max(&self) -> u32 {
        ENTRY_BODY_BYTES_MAX
    }

    fn disk_limited(&self) -> bool {
        // The store shares the disk; it runs without a capacity limit.
        false
    }

    fn open(
        &self,
        id: u64,
        disk: &MemDisk,
        record: RecordingStateMachine,
    ) -> Result<Applier, OpenError> {
        let store = Store::open(disk.clone(), store_config(id)).map_err(|err| OpenError {
            io: matches!(err, store::error::StoreError::Io { .. }),
            reason: format!("store: {err}"),
        })?;
        Ok(Applier {
            machine: Box::new(TeeMachine {
                store: StoreMachine::new(store.clone()),
                record,
            }),
            hook: Some(Arc::new(store::entry::OffsetHook)),
            store: Some(store),
        })
    }

    fn serve(
        &self,
        cluster: Cluster,
        id: u64,
        incarnation: u64,
        ledger: Ledger,
        store: Option<Arc<Store<MemDisk>>>,
    ) -> Pin<Box<dyn Future<Output = turmoil::Result>>> {
        Box::pin(async move {
            let store = store.expect("the messaging workload opened a store");
            let broker = Broker::start(
                &TurmoilTransport,
                broker_config(&cluster, id, incarnation),
                Arc::new(ledger),
                store,
            )
            .await?;
            {
                let mut slots = cluster.slots.lock().expect("slots");
                let slot = slots.get_mut(&id).expect("slot exists");
                slot.broker = Some(broker.view());
            }
            std::future::pending::<()>().await;
            drop(broker);
            Ok(())
        })
    }
}

/// The name server's broker registry, once it runs: the driver reads routes from it.
pub type RegistrySlot = Arc<std::sync::Mutex<Option<Arc<std::sync::Mutex<namesrv::Registry>>>>>;

/// The body of the name server's host.
pub async fn run_namesrv(registry: RegistrySlot) -> turmoil::Result {
    let config = namesrv::NamesrvConfig {
        listen: format!("0.0.0.0:{NAMESRV_PORT}"),
        broker_timeout: Duration::from_secs(5),
        scan_interval: Duration::from_secs(1),
    };
    let namesrv = namesrv::Namesrv::start(&TurmoilTransport, config).await?;
    *registry.lock().expect("registry slot") = Some(namesrv.registry());
    std::future::pending::<()>().await;
    Ok(())
}

/// The body of client host `k`: its producers and one consumer.
pub async fn run_client_host(cluster: Cluster, k: u64) -> turmoil::Result {
    for producer in 0..cluster.config.clients_per_node {
        let seed = cluster.config.seed ^ salt::PRODUCERS ^ (k << 40) ^ producer;
        tokio::spawn(produce_forever(cluster.clone(), (k << 16) | producer, seed));
    }
    let seed = cluster.config.seed ^ salt::CONSUMERS ^ (k << 40);
    tokio::spawn(consume_forever(cluster.clone(), k << 16, seed));
    std::future::pending::<()>().await;
    Ok(())
}

/// What kind of send the workload makes.
#[derive(Clone, Copy)]
enum SendKind {
    Plain,
    /// Due this many ms later.
    Scheduled(u64),
    /// A half message.
    Half,
}

fn send_request(id: u64, queue_id: i32, born_timestamp: i64, kind: SendKind) -> RemotingCommand {
    let mut properties = protocol::message::Properties::default();
    match kind {
        SendKind::Plain => {}
        SendKind::Scheduled(delay) => properties.set(property::TIMER_DELAY_MS, delay.to_string()),
        SendKind::Half => {
            properties.set(property::TRAN_MSG, "true");
            properties.set(property::PGROUP, PRODUCER_GROUP);
        }
    }
    let header = SendMessageRequestHeader {
        producer_group: PRODUCER_GROUP.into(),
        topic: TOPIC.into(),
        default_topic: broker::TBW102.into(),
        default_topic_queue_nums: QUEUES,
        queue_id,
        sys_flag: if matches!(kind, SendKind::Half) {
            sys_flag::TRANSACTION_PREPARED
        } else {
            0
        },
        born_timestamp,
        flag: 0,
        properties: (!matches!(kind, SendKind::Plain)).then(|| properties.encode()),
        ..Default::default()
    };
    RemotingCommand::request(request::SEND_MESSAGE_V2, header.to_v2()).with_body(body(id))
}

/// END_TRANSACTION committing (`commit`) or rolling back the half message a send stored.
fn end_transaction_request(
    half: &SendMessageResponseHeader,
    commit: bool,
) -> Option<RemotingCommand> {
    let (_, commit_log_offset) = decode_offset_msg_id(&half.msg_id).ok()?;
    let header = EndTransactionRequestHeader {
        topic: Some(TOPIC.into()),
        producer_group: PRODUCER_GROUP.into(),
        tran_state_table_offset: half.queue_offset,
        commit_log_offset,
        commit_or_rollback: if commit { 8 } else { 12 },
        from_transaction_check: Some(false),
        msg_id: half.msg_id.clone(),
        transaction_id: half.transaction_id.clone(),
        bname: None,
    };
    Some(RemotingCommand::request(
        request::END_TRANSACTION,
        header.to_ext(),
    ))
}

/// Heartbeats every broker as a producer of [`PRODUCER_GROUP`] on the producer's connections,
/// so a broker with a transaction to check has someone to ask.
async fn heartbeat_forever(
    client: Arc<remoting::Client<TurmoilTransport>>,
    brokers: Vec<String>,
    producer: u64,
) {
    let heartbeat = protocol::body::HeartbeatData {
        client_id: format!("sim-producer@{producer:#x}"),
        consumer_data_set: Vec::new(),
        producer_data_set: vec![protocol::body::ProducerData {
            group_name: PRODUCER_GROUP.into(),
        }],
    };
    let body = bytes::Bytes::from(protocol::body::to_json(&heartbeat));
    loop {
        for addr in &brokers {
            let request =
                RemotingCommand::request(request::HEART_BEAT, std::collections::BTreeMap::new())
                    .with_body(body.clone());
            if client.request(addr, request, SEND_TIMEOUT).await.is_err() {
                client.forget(addr).await;
            }
        }
        tokio::time::sleep(PRODUCER_HEARTBEAT).await;
    }
}

/// Answers the brokers' CHECK_TRANSACTION_STATE as the application would, from what it
/// decided: commit or roll back as recorded; a half message whose send was never acknowledged
/// (the answer was lost) is rolled back, and recorded so.
async fn answer_checks(
    cluster: Cluster,
    client: Arc<remoting::Client<TurmoilTransport>>,
    mut inbound: tokio::sync::mpsc::Receiver<(String, RemotingCommand)>,
) {
    while let Some((addr, command)) = inbound.recv().await {
        if command.code != request::CHECK_TRANSACTION_STATE {
            continue;
        }
        let Ok(header) = CheckTransactionStateRequestHeader::from_ext(&command.ext_fields) else {
            continue;
        };
        let Some(id) = StoredMessage::decode(&command.body)
            .ok()
            .and_then(|(message, _)| id_of(&message.body))
        else {
            continue;
        };
        let commit = {
            let mut oracle = cluster.oracle.lock().expect("oracle");
            if oracle.committed.contains(&id) {
                true
            } else {
                if !oracle.rolled_back.contains(&id) {
                    oracle.rolled_back.push(id);
                }
                false
            }
        };
        let answer = EndTransactionRequestHeader {
            topic: header.topic,
            producer_group: PRODUCER_GROUP.into(),
            tran_state_table_offset: header.tran_state_table_offset,
            commit_log_offset: header.commit_log_offset,
            commit_or_rollback: if commit { 8 } else { 12 },
            from_transaction_check: Some(true),
            msg_id: header.msg_id.unwrap_or_default(),
            transaction_id: header.transaction_id,
            bname: header.bname,
        };
        let end = RemotingCommand::request(request::END_TRANSACTION, answer.to_ext());
        let _ = client.oneway(&addr, end).await;
    }
}

/// One producer: sends unique ids to a random queue, trying the brokers in turn until one
/// answers SUCCESS, and records what was acknowledged.
async fn produce_forever(cluster: Cluster, producer: u64, seed: u64) {
    let mut rng = rng(seed, 0);
    let pause = cluster.config.propose_pause_ms.clone();
    let (client, inbound) = remoting::Client::new(TurmoilTransport);
    let client = Arc::new(client);
    let brokers: Vec<String> = (1..=cluster.config.nodes)
        .map(|id| format!("{}:{BROKER_PORT}", host_name(id)))
        .collect();
    tokio::spawn(heartbeat_forever(client.clone(), brokers.clone(), producer));
    tokio::spawn(answer_checks(cluster.clone(), client.clone(), inbound));
    let mut next = rng.random_range(0..brokers.len());
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(pause.clone()))).await;
        if cluster.quiet.load(Ordering::Relaxed) {
            continue;
        }
        let queue_id = rng.random_range(0..QUEUES);
        let kind = if rng.random_ratio(1, SCHEDULED_ONE_IN) {
            SendKind::Scheduled(rng.random_range(1..=SCHEDULED_DELAY_MAX_MS))
        } else if rng.random_ratio(1, TRANSACTION_ONE_IN) {
            SendKind::Half
        } else {
            SendKind::Plain
        };
        for attempt in 0..brokers.len() {
            let at = (next + attempt) % brokers.len();
            let addr = &brokers[at];
            let id = cluster.oracle.lock().expect("oracle").next_id();
            let born = seams::Clock::now_ms(&SimClock);
            let answer = client
                .request(addr, send_request(id, queue_id, born, kind), SEND_TIMEOUT)
                .await;
            match answer {
                Ok(answer) if answer.code == response::SUCCESS => {
                    let header = SendMessageResponseHeader::from_ext(&answer.ext_fields)
                        .expect("a SUCCESS answer to a send carries its header");
                    if let SendKind::Half = kind {
                        // The fate is recorded before END_TRANSACTION leaves, so a message seen
                        // before its commit is recorded is one visible too early.
                        let mut commit = rng.random_bool(0.5);
                        let twice = rng.random_ratio(1, 4);
                        let unanswered = rng.random_ratio(1, UNANSWERED_ONE_IN);
                        {
                            let mut oracle = cluster.oracle.lock().expect("oracle");
                            oracle.halves.push(id);
                            if let Ok((_, position)) = decode_offset_msg_id(&header.msg_id) {
                                let place = HalfPlace {
                                    queue_id,
                                    position: position as u64,
                                };
                                oracle.half_places.insert(id, place);
                            }
                            if oracle.rolled_back.contains(&id) {
                                // A check came before this answer, and was answered "rollback".
                                commit = false;
                            } else if commit {
                                oracle.committed.push(id);
                            } else {
                                oracle.rolled_back.push(id);
                            }
                        }
                        let ends = match (unanswered, twice) {
                            (true, _) => 0,
                            (false, true) => 2,
                            (false, false) => 1,
                        };
                        for _ in 0..ends {
                            if let Some(end) = end_transaction_request(&header, commit) {
                                let _ = client.oneway(addr, end).await;
                            }
                        }
                        next = at;
                        break;
                    }
                    if let SendKind::Scheduled(delay_ms) = kind {
                        let ack = ScheduledAck {
                            id,
                            queue_id: header.queue_id,
                            delay_ms,
                        };
                        cluster.oracle.lock().expect("oracle").scheduled.push(ack);
                        next = at;
                        break;
                    }
                    let ack = SendAck {
                        id,
                        producer,
                        queue_id: header.queue_id,
                        queue_offset: header.queue_offset,
                        sent_ms: born,
                    };
                    cluster.oracle.lock().expect("oracle").sends.push(ack);
                    next = at;
                    break;
                }
                Ok(answer)
                    if answer.code == response::SERVICE_NOT_AVAILABLE
                        && answer
                            .remark
                            .as_deref()
                            .is_some_and(|r| r.contains("disk is full")) =>
                {
                    cluster.oracle.lock().expect("oracle").refused_full.push(id);
                }
                // Not master, or busy: the next broker may take it.
                Ok(_) => {}
                Err(_) => client.forget(addr).await,
            }
        }
    }
}

fn pull_request(consumer: u64, queue_id: i32, queue_offset: i64) -> RemotingCommand {
    let header = PullMessageRequestHeader {
        consumer_group: format!("sim-consumer-{consumer:x}"),
        topic: TOPIC.into(),
        queue_id,
        queue_offset,
        max_msg_nums: PULL_BATCH,
        sys_flag: pull_flag::SUSPEND | pull_flag::SUBSCRIPTION,
        commit_offset: 0,
        suspend_timeout_millis: PULL_SUSPEND.as_millis() as i64,
        subscription: Some("*".into()),
        sub_version: 0,
        expression_type: Some("TAG".into()),
        max_msg_bytes: None,
    };
    RemotingCommand::request(request::PULL_MESSAGE, header.to_ext())
}

/// One consumer: pulls a random queue from its next offset, from one replica until that one
/// fails or refuses, then the next. What it gets must continue the queue exactly: the offsets
/// dense from where it asked, each record of the queue it asked. It skips ahead only when
/// retention cut the queue past it (PULL_OFFSET_MOVED to a later offset), so an answer from a
/// replica that applied less (or is rebuilding its store) only waits.
async fn consume_forever(cluster: Cluster, consumer: u64, seed: u64) {
    let mut rng = rng(seed, 0);
    let (client, _inbound) = remoting::Client::new(TurmoilTransport);
    let brokers: Vec<String> = (1..=cluster.config.nodes)
        .map(|id| format!("{}:{BROKER_PORT}", host_name(id)))
        .collect();
    let mut next_offsets = vec![0i64; QUEUES as usize];
    let mut at = rng.random_range(0..brokers.len());
    let fail = |detail: String| {
        cluster
            .oracle
            .lock()
            .expect("oracle")
            .consume_errors
            .push(format!("consumer {consumer:#x}: {detail}"));
    };
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..200))).await;
        let queue_id = rng.random_range(0..QUEUES);
        let from = next_offsets[queue_id as usize];
        let addr = &brokers[at];
        let answer = client
            .request(addr, pull_request(consumer, queue_id, from), SEND_TIMEOUT)
            .await;
        let answer = match answer {
            Ok(answer) if answer.code == response::SUCCESS => answer,
            Ok(answer) if answer.code == response::PULL_OFFSET_MOVED => {
                // Retention cut the queue past `from`: move on to its min, as RocketMQ's
                // consumers do. An answer naming an offset at or before `from` (a replica that
                // applied less) is not a jump: ask another replica.
                let next = PullMessageResponseHeader::from_ext(&answer.ext_fields)
                    .map(|h| h.next_begin_offset)
                    .unwrap_or(from);
                if next > from {
                    next_offsets[queue_id as usize] = next;
                    cluster
                        .oracle
                        .lock()
                        .expect("oracle")
                        .skipped
                        .push((consumer, queue_id, from, next));
                } else {
                    at = (at + 1) % brokers.len();
                }
                continue;
            }
            Ok(_) => {
                at = (at + 1) % brokers.len();
                continue;
            }
            Err(_) => {
                client.forget(addr).await;
                at = (at + 1) % brokers.len();
                continue;
            }
        };
        let Ok(header) = PullMessageResponseHeader::from_ext(&answer.ext_fields) else {
            fail(format!("{addr} answered a pull without its header"));
            continue;
        };
        let messages = match StoredMessage::decode_all(&answer.body) {
            Ok(messages) => messages,
            Err(err) => {
                fail(format!(
                    "{addr} answered queue {queue_id} at {from} with undecodable records: {err}"
                ));
                continue;
            }
        };
        let mut expected = from;
        let mut received = Vec::with_capacity(messages.len());
        for message in &messages {
            let id = id_of(&message.body);
            if message.topic != TOPIC
                || message.queue_id != queue_id
                || message.queue_offset != expected
            {
                fail(format!(
                    "{addr} answered queue {queue_id} at {from} with {}:{} offset {} where offset {expected} was next",
                    message.topic, message.queue_id, message.queue_offset
                ));
                break;
            }
            let Some(id) = id else {
                fail(format!(
                    "{addr}: queue {queue_id} offset {expected} carries no id"
                ));
                break;
            };
            if let Some(due) = message
                .properties
                .get(protocol::message::property::TIMER_OUT_MS)
                .and_then(|d| d.parse::<i64>().ok())
            {
                let now = seams::Clock::now_ms(&SimClock);
                if message.store_timestamp < due || now < due {
                    cluster.oracle.lock().expect("oracle").early.push(format!(
                        "{addr}: queue {queue_id} offset {expected} (id {id}) is due at {due} but was stored at {} and received at {now}",
                        message.store_timestamp
                    ));
                }
            }
            if message.properties.get(property::TRAN_MSG) == Some("true") {
                let mut oracle = cluster.oracle.lock().expect("oracle");
                if let Err(breach) = crate::invariants::transaction_pulled(
                    id,
                    &oracle.committed,
                    &oracle.rolled_back,
                ) {
                    oracle.transaction_breaches.push(format!(
                        "{addr}: queue {queue_id} offset {expected}: {breach}"
                    ));
                }
            }
            received.push(Consumed {
                id,
                consumer,
                queue_id,
                queue_offset: expected,
            });
            expected += 1;
        }
        if received.len() == messages.len() && header.next_begin_offset != expected {
            fail(format!(
                "{addr} answered queue {queue_id} at {from} with {} records and next offset {}",
                messages.len(),
                header.next_begin_offset
            ));
        }
        next_offsets[queue_id as usize] = expected;
        cluster
            .oracle
            .lock()
            .expect("oracle")
            .consumed
            .extend(received);
    }
}

/// Whether every consumer has pulled every queue up to `ends` (queue id to one past the last
/// acknowledged offset) and received every message of `due` (id, queue: acknowledged scheduled
/// messages, committed transactions), or jumped over part of its queue that retention cut.
pub fn consumers_caught_up(
    consumed: &[Consumed],
    ends: &std::collections::BTreeMap<i32, i64>,
    due: &[(u64, i32)],
    skipped: &[(u64, i32, i64, i64)],
) -> bool {
    if first_not_received(consumed, due, skipped).is_some() {
        return false;
    }
    let mut reached: std::collections::BTreeMap<(u64, i32), i64> =
        std::collections::BTreeMap::new();
    for c in consumed {
        let next = reached.entry((c.consumer, c.queue_id)).or_default();
        *next = (*next).max(c.queue_offset + 1);
    }
    for (consumer, queue_id, _, to) in skipped {
        let next = reached.entry((*consumer, *queue_id)).or_default();
        *next = (*next).max(*to);
    }
    (1..=CLIENT_HOSTS).all(|k| {
        ends.iter()
            .all(|(queue_id, end)| reached.get(&(k << 16, *queue_id)).copied().unwrap_or(0) >= *end)
    })
}

/// The first (consumer, id) of `due` (id, queue) a consumer has not received, unless it jumped
/// over part of that queue that retention cut.
pub fn first_not_received(
    consumed: &[Consumed],
    due: &[(u64, i32)],
    skipped: &[(u64, i32, i64, i64)],
) -> Option<(u64, u64)> {
    let got: std::collections::BTreeSet<(u64, u64)> =
        consumed.iter().map(|c| (c.consumer, c.id)).collect();
    (1..=CLIENT_HOSTS).find_map(|k| {
        due.iter()
            .find(|(id, queue_id)| {
                !got.contains(&(k << 16, *id))
                    && !crate::invariants::skips_queue(skipped, k << 16, *queue_id)
            })
            .map(|(id, _)| (k << 16, *id))
    })
}
