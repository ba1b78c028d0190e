//! A fake name server and fake brokers on `remoting::Server`: in-memory topics and queues
//! answering the requests a client sends, per PROTOCOL.md, so the client's real wire code
//! runs end to end. Each broker can be told to fail sends the way a follower or a broken
//! broker does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use client::ClientConfig;
use protocol::body::{
    self, BrokerData, ConsumerListBody, HeartbeatData, QueueData, TopicRouteData, perm,
};
use protocol::code::{request, response};
use protocol::filter::TagFilter;
use protocol::header::{
    ConsumerGroupHeader, ConsumerSendMsgBackRequestHeader, GetRouteInfoRequestHeader,
    OffsetResponseHeader, PullMessageRequestHeader, PullMessageResponseHeader,
    QueryConsumerOffsetRequestHeader, QueueRequestHeader, SearchOffsetRequestHeader,
    SendMessageRequestHeader, SendMessageResponseHeader, UnregisterClientRequestHeader,
    UpdateConsumerOffsetRequestHeader, pull_flag,
};
use protocol::message::{
    BatchItem, Properties, StoredMessage, decode_batch, offset_msg_id, property, tags_code,
};
use protocol::{CommandHeader, RemotingCommand};
use remoting::{Handler, Peer, Server, TcpTransport};
use tokio::sync::Notify;

/// Longest hold of a pull, whatever the client asks: keeps a forgotten poll short.
const HOLD_MAX: Duration = Duration::from_secs(15);
/// Distance between the commit-log offsets the fake hands out.
const COMMIT_LOG_OFFSET_STEP: i64 = 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn ok(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, response::SUCCESS)
}

fn refuse(req: &RemotingCommand, code: i32, remark: impl Into<String>) -> RemotingCommand {
    RemotingCommand::response_to(req, code).with_remark(remark)
}

/// A broker group as the name server knows it.
#[derive(Debug, Clone, Default)]
struct NsBroker {
    addrs: BTreeMap<i64, String>,
    /// Topic → (queues, perm).
    topics: BTreeMap<String, (i32, i32)>,
}

/// The fake name server.
#[derive(Default)]
pub struct Namesrv {
    brokers: Mutex<BTreeMap<String, NsBroker>>,
    /// GET_ROUTEINFO_BY_TOPIC requests answered.
    pub route_requests: AtomicU32,
}

impl Namesrv {
    /// Registers a broker replica and topics of its group.
    pub fn register(&self, broker_name: &str, id: i64, addr: &str, topics: &[(&str, i32, i32)]) {
        let mut brokers = self.brokers.lock().unwrap();
        let entry = brokers.entry(broker_name.to_string()).or_default();
        entry.addrs.insert(id, addr.to_string());
        for (topic, queues, perm) in topics {
            entry.topics.insert((*topic).to_string(), (*queues, *perm));
        }
    }

    /// Replaces a group's replicas (a failover).
    pub fn set_addrs(&self, broker_name: &str, addrs: &[(i64, &str)]) {
        let mut brokers = self.brokers.lock().unwrap();
        let entry = brokers.entry(broker_name.to_string()).or_default();
        entry.addrs = addrs
            .iter()
            .map(|(id, a)| (*id, (*a).to_string()))
            .collect();
    }

    fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let brokers = self.brokers.lock().unwrap();
        let mut route = TopicRouteData::default();
        for (name, broker) in brokers.iter() {
            let Some((queues, perm)) = broker.topics.get(topic) else {
                continue;
            };
            route.broker_datas.push(BrokerData {
                broker_addrs: broker.addrs.clone(),
                broker_name: name.clone(),
                cluster: "FakeCluster".into(),
                enable_acting_master: false,
                zone_name: None,
            });
            route.queue_datas.push(QueueData {
                broker_name: name.clone(),
                perm: *perm,
                read_queue_nums: *queues,
                topic_sys_flag: 0,
                write_queue_nums: *queues,
            });
        }
        (!route.queue_datas.is_empty()).then_some(route)
    }
}

impl Handler for Namesrv {
    async fn handle(&self, _peer: &Arc<Peer>, req: RemotingCommand) -> Option<RemotingCommand> {
        if req.code != request::GET_ROUTEINFO_BY_TOPIC {
            return Some(refuse(
                &req,
                response::REQUEST_CODE_NOT_SUPPORTED,
                "not here",
            ));
        }
        self.route_requests.fetch_add(1, Ordering::SeqCst);
        let header = GetRouteInfoRequestHeader::from_ext(&req.ext_fields).unwrap();
        Some(match self.route(&header.topic) {
            Some(route) => ok(&req).with_body(body::to_json(&route)),
            None => refuse(
                &req,
                response::TOPIC_NOT_EXIST,
                format!(
                    "No topic route info in name server for the topic: {}",
                    header.topic
                ),
            ),
        })
    }
}

/// How a fake broker answers sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stores them.
    Normal,
    /// SYSTEM_ERROR, as a broken broker.
    SystemError,
    /// SERVICE_NOT_AVAILABLE "not master", as a follower.
    NotMaster,
    /// Never answers a send, as a broker cut off or frozen with the connection open.
    Silent,
}

#[derive(Default)]
struct BrokerState {
    /// Topic → queues.
    topics: BTreeMap<String, i32>,
    queues: BTreeMap<(String, i32), Vec<StoredMessage>>,
    next_commit_log_offset: i64,
    /// (group, topic, queue) → committed offset.
    offsets: BTreeMap<(String, String, i32), i64>,
    /// Group → client id → its connection.
    consumers: BTreeMap<String, BTreeMap<String, Arc<Peer>>>,
    /// (group, topic) → TAG expression from heartbeats.
    subscriptions: BTreeMap<(String, String), String>,
}

/// A fake broker (one replica).
pub struct Broker {
    /// Its group's name.
    pub name: String,
    addr: OnceLock<SocketAddr>,
    ns: Arc<Namesrv>,
    mode: Mutex<Mode>,
    state: Mutex<BrokerState>,
    arrivals: Notify,
    codes: Mutex<Vec<i32>>,
    /// NOTIFY_CONSUMER_IDS_CHANGED sent.
    pub notifies: AtomicU32,
}

impl Broker {
    /// Starts a broker of group `name`; registers it with `ns` as master if `register`.
    pub async fn start(name: &str, ns: &Arc<Namesrv>, register: bool) -> (Arc<Broker>, Server) {
        let broker = Arc::new(Broker {
            name: name.to_string(),
            addr: OnceLock::new(),
            ns: ns.clone(),
            mode: Mutex::new(Mode::Normal),
            state: Mutex::default(),
            arrivals: Notify::new(),
            codes: Mutex::default(),
            notifies: AtomicU32::new(0),
        });
        let server = Server::start(&TcpTransport, "127.0.0.1:0", broker.clone())
            .await
            .unwrap();
        broker.addr.set(server.local_addr()).unwrap();
        broker
            .state
            .lock()
            .unwrap()
            .topics
            .insert("TBW102".into(), 8);
        if register {
            ns.register(
                name,
                0,
                &broker.addr(),
                &[("TBW102", 8, perm::READ | perm::WRITE | perm::INHERIT)],
            );
        }
        (broker, server)
    }

    /// Its client address.
    pub fn addr(&self) -> String {
        self.addr.get().unwrap().to_string()
    }

    /// Sets how it answers sends.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Creates `topic` here and registers it with the name server.
    pub fn create_topic(&self, topic: &str, queues: i32) {
        self.state
            .lock()
            .unwrap()
            .topics
            .insert(topic.to_string(), queues);
        self.ns.register(
            &self.name,
            0,
            &self.addr(),
            &[(topic, queues, perm::READ | perm::WRITE)],
        );
    }

    /// The messages stored in a queue.
    pub fn messages(&self, topic: &str, queue_id: i32) -> Vec<StoredMessage> {
        let state = self.state.lock().unwrap();
        state
            .queues
            .get(&(topic.to_string(), queue_id))
            .cloned()
            .unwrap_or_default()
    }

    /// Every message of `topic`, by queue.
    pub fn all_messages(&self, topic: &str) -> Vec<StoredMessage> {
        let state = self.state.lock().unwrap();
        state
            .queues
            .iter()
            .filter(|((t, _), _)| t == topic)
            .flat_map(|(_, m)| m.iter().cloned())
            .collect()
    }

    /// Queues of `topic` here, if it exists.
    pub fn topic_queues(&self, topic: &str) -> Option<i32> {
        self.state.lock().unwrap().topics.get(topic).copied()
    }

    /// The committed offset of a group on a queue.
    pub fn committed(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        let state = self.state.lock().unwrap();
        state
            .offsets
            .get(&(group.to_string(), topic.to_string(), queue_id))
            .copied()
    }

    /// Sets a committed offset directly.
    pub fn set_committed(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let mut state = self.state.lock().unwrap();
        state
            .offsets
            .insert((group.to_string(), topic.to_string(), queue_id), offset);
    }

    /// How many requests with `code` arrived.
    pub fn count(&self, code: i32) -> usize {
        self.codes
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == code)
            .count()
    }

    /// Client ids of a group.
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .consumers
            .get(group)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn notify_group(&self, state: &BrokerState, group: &str) {
        let header = ConsumerGroupHeader {
            consumer_group: group.to_string(),
        };
        for peer in state
            .consumers
            .get(group)
            .into_iter()
            .flat_map(|c| c.values())
        {
            let command =
                RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED, header.to_ext());
            if peer.send_oneway(command) {
                self.notifies.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn store(&self, state: &mut BrokerState, mut message: StoredMessage) -> StoredMessage {
        let queue = state
            .queues
            .entry((message.topic.clone(), message.queue_id))
            .or_default();
        message.queue_offset = queue.len() as i64;
        state.next_commit_log_offset += COMMIT_LOG_OFFSET_STEP;
        message.commit_log_offset = state.next_commit_log_offset;
        message.store_timestamp = now_ms();
        message.store_host = *self.addr.get().unwrap();
        let queue = state
            .queues
            .get_mut(&(message.topic.clone(), message.queue_id))
            .unwrap();
        queue.push(message.clone());
        message
    }

    fn send(&self, peer: &Peer, req: &RemotingCommand) -> RemotingCommand {
        match *self.mode.lock().unwrap() {
            Mode::Normal => {}
            Mode::SystemError => return refuse(req, response::SYSTEM_ERROR, "fake failure"),
            Mode::Silent => unreachable!("a silent broker answers no send"),
            Mode::NotMaster => {
                return refuse(
                    req,
                    response::SERVICE_NOT_AVAILABLE,
                    "not master: a follower",
                );
            }
        }
        let header = SendMessageRequestHeader::from_v2(&req.ext_fields).unwrap();
        let items = if req.code == request::SEND_BATCH_MESSAGE {
            assert_eq!(header.batch, Some(true), "a batch says so in its header");
            decode_batch(&req.body).unwrap()
        } else {
            vec![BatchItem {
                flag: header.flag,
                body: req.body.clone(),
                properties: Properties::parse(header.properties.as_deref().unwrap_or("")),
            }]
        };
        let mut state = self.state.lock().unwrap();
        let queues = match state.topics.get(&header.topic) {
            Some(queues) => *queues,
            None => {
                let Some(template) = state.topics.get(&header.default_topic).copied() else {
                    return refuse(req, response::TOPIC_NOT_EXIST, "no such topic");
                };
                let queues = header.default_topic_queue_nums.min(template);
                state.topics.insert(header.topic.clone(), queues);
                self.ns.register(
                    &self.name,
                    0,
                    &self.addr(),
                    &[(&header.topic, queues, perm::READ | perm::WRITE)],
                );
                queues
            }
        };
        if header.queue_id >= queues {
            return refuse(req, response::INVALID_PARAMETER, "queueId is illegal");
        }
        let queue_id = header.queue_id.max(0);
        let mut stored = Vec::new();
        for item in items {
            let message = StoredMessage {
                topic: header.topic.clone(),
                queue_id,
                flag: item.flag,
                queue_offset: 0,
                commit_log_offset: 0,
                sys_flag: if req.code == request::SEND_BATCH_MESSAGE {
                    0
                } else {
                    header.sys_flag
                },
                born_timestamp: header.born_timestamp,
                born_host: peer.addr,
                store_timestamp: 0,
                store_host: *self.addr.get().unwrap(),
                reconsume_times: header.reconsume_times.unwrap_or(0),
                prepared_transaction_offset: 0,
                body: item.body,
                properties: item.properties,
            };
            stored.push(self.store(&mut state, message));
        }
        drop(state);
        self.arrivals.notify_waiters();
        let answer = SendMessageResponseHeader {
            msg_id: stored
                .iter()
                .map(|m| offset_msg_id(m.store_host, m.commit_log_offset))
                .collect::<Vec<_>>()
                .join(","),
            queue_id,
            queue_offset: stored[0].queue_offset,
            transaction_id: None,
            batch_uniq_id: None,
        };
        let mut ext = answer.to_ext();
        ext.insert("MSG_REGION".into(), "DefaultRegion".into());
        ext.insert("TRACE_ON".into(), "true".into());
        ok(req).with_ext(ext)
    }

    fn pull_once(
        &self,
        req: &RemotingCommand,
        header: &PullMessageRequestHeader,
    ) -> RemotingCommand {
        let mut state = self.state.lock().unwrap();
        if !state.topics.contains_key(&header.topic) {
            return refuse(req, response::TOPIC_NOT_EXIST, "no such topic");
        }
        if header.sys_flag & pull_flag::COMMIT_OFFSET != 0 {
            state.offsets.insert(
                (
                    header.consumer_group.clone(),
                    header.topic.clone(),
                    header.queue_id,
                ),
                header.commit_offset,
            );
        }
        let expression = if header.sys_flag & pull_flag::SUBSCRIPTION != 0 {
            header.subscription.clone().unwrap_or_default()
        } else {
            state
                .subscriptions
                .get(&(header.consumer_group.clone(), header.topic.clone()))
                .cloned()
                .unwrap_or_else(|| "*".into())
        };
        let filter = TagFilter::parse(&expression);
        let messages = state
            .queues
            .get(&(header.topic.clone(), header.queue_id))
            .cloned()
            .unwrap_or_default();
        let max = messages.len() as i64;
        let answer = |code, next: i64| {
            let h = PullMessageResponseHeader {
                suggest_which_broker_id: 0,
                next_begin_offset: next,
                min_offset: 0,
                max_offset: max,
            };
            refuse(req, code, "fake").with_ext(h.to_ext())
        };
        let offset = header.queue_offset;
        if offset < 0 || offset > max {
            return answer(
                response::PULL_OFFSET_MOVED,
                if offset < 0 { 0 } else { max },
            );
        }
        if offset == max {
            return answer(response::PULL_NOT_FOUND, offset);
        }
        let mut body = Vec::new();
        let mut found = 0;
        let mut next = offset;
        for message in &messages[offset as usize..] {
            if found >= header.max_msg_nums {
                break;
            }
            next = message.queue_offset + 1;
            if filter.matches_code(tags_code(message.properties.get(property::TAGS))) {
                message.encode(&mut body).unwrap();
                found += 1;
            }
        }
        if found == 0 {
            return answer(response::PULL_RETRY_IMMEDIATELY, next);
        }
        answer(response::SUCCESS, next).with_body(Bytes::from(body))
    }

    async fn pull(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = PullMessageRequestHeader::from_ext(&req.ext_fields).unwrap();
        let notified = self.arrivals.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let first = self.pull_once(req, &header);
        if first.code != response::PULL_NOT_FOUND || header.sys_flag & pull_flag::SUSPEND == 0 {
            return first;
        }
        let hold = Duration::from_millis(header.suspend_timeout_millis.max(0) as u64).min(HOLD_MAX);
        // Woken by an arrival or at the end of the hold; either way answer what is there.
        let _ = tokio::time::timeout(hold, notified).await;
        self.pull_once(req, &header)
    }

    fn heartbeat(&self, peer: &Arc<Peer>, req: &RemotingCommand) -> RemotingCommand {
        let data: HeartbeatData = body::parse(&req.body, "heartbeat").unwrap();
        assert!(!data.client_id.is_empty(), "a heartbeat names its client");
        let mut state = self.state.lock().unwrap();
        for consumer in &data.consumer_data_set {
            let group = consumer.group_name.clone();
            let members = state.consumers.entry(group.clone()).or_default();
            let joined = members
                .insert(data.client_id.clone(), peer.clone())
                .is_none_or(|old| old.id != peer.id);
            for sub in &consumer.subscription_data_set {
                state
                    .subscriptions
                    .insert((group.clone(), sub.topic.clone()), sub.sub_string.clone());
            }
            let retry = format!("%RETRY%{group}");
            if consumer.message_model == "CLUSTERING" && !state.topics.contains_key(&retry) {
                state.topics.insert(retry.clone(), 1);
                self.ns.register(
                    &self.name,
                    0,
                    &self.addr(),
                    &[(&retry, 1, perm::READ | perm::WRITE)],
                );
            }
            if joined && consumer.message_model == "CLUSTERING" {
                self.notify_group(&state, &group);
            }
        }
        ok(req)
    }

    fn leave(&self, client_id: &str, peer_id: Option<u64>) {
        let mut state = self.state.lock().unwrap();
        let mut changed = Vec::new();
        for (group, members) in &mut state.consumers {
            let gone = members
                .get(client_id)
                .is_some_and(|p| peer_id.is_none_or(|id| p.id == id));
            if gone {
                members.remove(client_id);
                changed.push(group.clone());
            }
        }
        for group in changed {
            self.notify_group(&state, &group);
        }
    }

    fn send_back(&self, req: &RemotingCommand) -> RemotingCommand {
        let header = ConsumerSendMsgBackRequestHeader::from_ext(&req.ext_fields).unwrap();
        let mut state = self.state.lock().unwrap();
        let found = state
            .queues
            .values()
            .flat_map(|q| q.iter())
            .find(|m| m.commit_log_offset == header.offset)
            .cloned();
        let Some(mut message) = found else {
            return refuse(req, response::SYSTEM_ERROR, "look message by offset failed");
        };
        let origin = header.origin_topic.clone().unwrap_or(message.topic.clone());
        if message.properties.get(property::RETRY_TOPIC).is_none() {
            message.properties.set(property::RETRY_TOPIC, origin);
        }
        message.topic = format!("%RETRY%{}", header.group);
        message.queue_id = 0;
        message.reconsume_times += 1;
        state.topics.entry(message.topic.clone()).or_insert(1);
        self.store(&mut state, message);
        drop(state);
        self.arrivals.notify_waiters();
        ok(req)
    }

    fn offset_answer(req: &RemotingCommand, offset: i64) -> RemotingCommand {
        ok(req).with_ext(OffsetResponseHeader { offset }.to_ext())
    }
}

impl Handler for Broker {
    async fn handle(&self, peer: &Arc<Peer>, req: RemotingCommand) -> Option<RemotingCommand> {
        self.codes.lock().unwrap().push(req.code);
        let answer = match req.code {
            request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE
                if *self.mode.lock().unwrap() == Mode::Silent =>
            {
                return None;
            }
            request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => self.send(peer, &req),
            request::PULL_MESSAGE => self.pull(&req).await,
            request::QUERY_CONSUMER_OFFSET => {
                let h = QueryConsumerOffsetRequestHeader::from_ext(&req.ext_fields).unwrap();
                match self.committed(&h.consumer_group, &h.topic, h.queue_id) {
                    Some(offset) => Self::offset_answer(&req, offset),
                    None => refuse(&req, response::QUERY_NOT_FOUND, "no offset"),
                }
            }
            request::UPDATE_CONSUMER_OFFSET => {
                let h = UpdateConsumerOffsetRequestHeader::from_ext(&req.ext_fields).unwrap();
                self.set_committed(&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
                ok(&req)
            }
            request::GET_MAX_OFFSET | request::GET_MIN_OFFSET => {
                let h = QueueRequestHeader::from_ext(&req.ext_fields).unwrap();
                let max = self.messages(&h.topic, h.queue_id).len() as i64;
                let offset = if req.code == request::GET_MAX_OFFSET {
                    max
                } else {
                    0
                };
                Self::offset_answer(&req, offset)
            }
            request::SEARCH_OFFSET_BY_TIMESTAMP => {
                let h = SearchOffsetRequestHeader::from_ext(&req.ext_fields).unwrap();
                let messages = self.messages(&h.topic, h.queue_id);
                let offset = messages
                    .iter()
                    .find(|m| m.store_timestamp >= h.timestamp)
                    .map_or(messages.len() as i64, |m| m.queue_offset);
                Self::offset_answer(&req, offset)
            }
            request::HEART_BEAT => self.heartbeat(peer, &req),
            request::UNREGISTER_CLIENT => {
                let h = UnregisterClientRequestHeader::from_ext(&req.ext_fields).unwrap();
                self.leave(&h.client_id, None);
                ok(&req)
            }
            request::GET_CONSUMER_LIST_BY_GROUP => {
                let h = ConsumerGroupHeader::from_ext(&req.ext_fields).unwrap();
                let ids = self.consumer_ids(&h.consumer_group);
                if ids.is_empty() {
                    refuse(&req, response::SYSTEM_ERROR, "no consumer for this group")
                } else {
                    ok(&req).with_body(body::to_json(&ConsumerListBody {
                        consumer_id_list: ids,
                    }))
                }
            }
            request::CONSUMER_SEND_MSG_BACK => self.send_back(&req),
            _ => refuse(&req, response::REQUEST_CODE_NOT_SUPPORTED, "not here"),
        };
        Some(answer)
    }

    fn closed(&self, peer: &Peer) {
        let ids: Vec<String> = {
            let state = self.state.lock().unwrap();
            state
                .consumers
                .values()
                .flat_map(|m| m.iter())
                .filter(|(_, p)| p.id == peer.id)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in ids {
            self.leave(&id, Some(peer.id));
        }
    }
}

/// A name server and brokers.
pub struct Cluster {
    /// The name server's state.
    pub ns: Arc<Namesrv>,
    ns_addr: String,
    /// The brokers, in the order given.
    pub brokers: Vec<Arc<Broker>>,
    servers: Vec<Server>,
}

impl Cluster {
    /// A name server and one registered master per name.
    pub async fn start(broker_names: &[&str]) -> Cluster {
        let ns = Arc::new(Namesrv::default());
        let ns_server = Server::start(&TcpTransport, "127.0.0.1:0", ns.clone())
            .await
            .unwrap();
        let mut cluster = Cluster {
            ns: ns.clone(),
            ns_addr: ns_server.local_addr().to_string(),
            brokers: Vec::new(),
            servers: vec![ns_server],
        };
        for name in broker_names {
            cluster.add_broker(name, true).await;
        }
        cluster
    }

    /// Starts another broker replica.
    pub async fn add_broker(&mut self, name: &str, register: bool) -> Arc<Broker> {
        let (broker, server) = Broker::start(name, &self.ns, register).await;
        self.brokers.push(broker.clone());
        self.servers.push(server);
        broker
    }

    /// The broker started `n`th.
    pub fn broker(&self, n: usize) -> &Arc<Broker> {
        &self.brokers[n]
    }

    /// Creates `topic` with `queues` queues on every broker.
    pub fn create_topic(&self, topic: &str, queues: i32) {
        for broker in &self.brokers {
            broker.create_topic(topic, queues);
        }
    }

    /// Client settings pointing at the name server.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new([self.ns_addr.clone()])
    }

    /// Stops every server.
    pub async fn shutdown(self) {
        for server in self.servers {
            server.shutdown().await;
        }
    }
}

/// An address where nothing listens: connecting to it is refused.
pub fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// How long a test waits for a condition before failing.
pub const TIMEOUT: Duration = Duration::from_secs(10);
