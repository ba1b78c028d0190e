//! One client's view of the cluster, as Java's `MQClientInstance`: connections, the route
//! cache and its refresh, heartbeats, and the requests brokers push to the client.
//!
//! Each producer or consumer owns one instance. Its background tasks hold only a weak
//! reference, so dropping the owner stops them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use protocol::body::{self, HeartbeatData, MessageQueue, TopicRouteData};
use protocol::code::{request, response};
use protocol::header::{GetRouteInfoRequestHeader, UnregisterClientRequestHeader};
use protocol::message::java_string_hash;
use protocol::{CommandHeader, RemotingCommand};
use remoting::Transport;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::limits;
use crate::route::{self, MASTER_ID};
use crate::transaction::TransactionChecker;

/// The last instance-name nanos handed out in this process, so two clients started in the
/// same nanosecond (or under a simulated clock) still get different ids.
static LAST_INSTANCE_NANOS: AtomicU64 = AtomicU64::new(0);

/// A cached route.
struct CachedRoute {
    data: TopicRouteData,
    /// `Some((template topic, queue nums))` while the route is the template's stand-in for a
    /// topic the brokers have not created yet.
    template: Option<(String, i32)>,
}

#[derive(Default)]
struct State {
    routes: BTreeMap<String, CachedRoute>,
    /// Topics refreshed every poll even without a route (a consumer's subscriptions).
    watched: BTreeSet<String>,
    /// Broker group → id → address, from the cached routes.
    brokers: BTreeMap<String, BTreeMap<i64, String>>,
    /// Addresses that got a heartbeat since they appeared in a route.
    greeted: BTreeSet<String>,
    /// The broker id each queue's last pull answer suggested.
    pull_from: BTreeMap<MessageQueue, i64>,
}

impl State {
    /// Rebuilds the broker table from every cached route, `newest` winning over the others.
    fn rebuild_brokers(&mut self, newest: &TopicRouteData) {
        let mut brokers = BTreeMap::new();
        for route in self.routes.values() {
            for data in &route.data.broker_datas {
                brokers.insert(data.broker_name.clone(), data.broker_addrs.clone());
            }
        }
        for data in &newest.broker_datas {
            brokers.insert(data.broker_name.clone(), data.broker_addrs.clone());
        }
        self.brokers = brokers;
        let known: BTreeSet<&String> = self.brokers.values().flat_map(|a| a.values()).collect();
        self.greeted.retain(|addr| known.contains(addr));
    }

    /// Addresses heartbeats go to: every replica for a consumer (pulls and consumer lists may
    /// be served by followers), masters only for a producer.
    fn heartbeat_addrs(&self, consumer: bool) -> BTreeSet<String> {
        self.brokers
            .values()
            .flat_map(|addrs| {
                addrs
                    .iter()
                    .filter(move |(id, _)| consumer || **id == MASTER_ID)
                    .map(|(_, addr)| addr.clone())
            })
            .collect()
    }
}

/// Makes `UNIQ_KEY`s in the client layout (PROTOCOL.md §6.6).
struct UniqIds {
    ip: IpAddr,
    pid: u16,
    hash: i32,
    start_ms: i64,
    counter: AtomicU16,
}

/// A client's shared machinery.
pub(crate) struct Instance<T: Transport> {
    pub(crate) config: ClientConfig,
    pub(crate) client_id: String,
    remoting: remoting::Client<T>,
    state: Mutex<State>,
    namesrv_next: AtomicUsize,
    heartbeat: HeartbeatData,
    /// Woken by NOTIFY_CONSUMER_IDS_CHANGED and by a change of a watched topic's route.
    pub(crate) rebalance: Notify,
    uniq: UniqIds,
    tasks: Mutex<Vec<AbortHandle>>,
    /// The producer group whose transactions this client answers checks for, and how.
    transaction_checker: Mutex<Option<(String, TransactionChecker)>>,
}

impl<T: Transport> Drop for Instance<T> {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            task.abort();
        }
    }
}

fn client_id(config: &ClientConfig) -> String {
    let name = config.instance_name.clone().unwrap_or_else(|| {
        let now = u64::try_from(config.clock.since_epoch().as_nanos()).unwrap_or(u64::MAX);
        let mut last = LAST_INSTANCE_NANOS.load(Ordering::Relaxed);
        let nanos = loop {
            let next = now.max(last.saturating_add(1));
            match LAST_INSTANCE_NANOS.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break next,
                Err(seen) => last = seen,
            }
        };
        format!("{}#{nanos}", config.process_id)
    });
    format!("{}@{name}", config.client_ip)
}

/// The error for an answer with an unexpected code.
pub(crate) fn refused(addr: &str, request_code: i32, answer: &RemotingCommand) -> ClientError {
    ClientError::Refused {
        addr: addr.to_string(),
        request_code,
        code: answer.code,
        remark: answer.remark.clone().unwrap_or_default(),
    }
}

impl<T: Transport> Instance<T> {
    /// Starts an instance announcing `heartbeat` (its client id is filled in here): the route
    /// poll, the heartbeat timer and the dispatch of brokers' requests. Must run inside a
    /// tokio runtime. The first heartbeat is the owner's to send, once it knows its routes.
    ///
    /// # Errors
    /// [`ClientError::Config`] when the settings do not validate.
    pub(crate) fn start(
        transport: T,
        config: ClientConfig,
        mut heartbeat: HeartbeatData,
    ) -> Result<Arc<Self>, ClientError> {
        config.validate()?;
        let client_id = client_id(&config);
        heartbeat.client_id = client_id.clone();
        let (remoting, inbound) = remoting::Client::new(transport);
        let uniq = UniqIds {
            ip: config.client_ip,
            pid: config.process_id as u16,
            hash: java_string_hash(&client_id),
            start_ms: config.clock.now_ms(),
            counter: AtomicU16::new(0),
        };
        let instance = Arc::new(Instance {
            config,
            client_id,
            remoting,
            state: Mutex::default(),
            namesrv_next: AtomicUsize::new(0),
            heartbeat,
            rebalance: Notify::new(),
            uniq,
            tasks: Mutex::default(),
            transaction_checker: Mutex::default(),
        });
        let weak = Arc::downgrade(&instance);
        let tasks = vec![
            tokio::spawn(dispatch_server_requests(weak.clone(), inbound)).abort_handle(),
            tokio::spawn(every(
                weak.clone(),
                instance.config.poll_namesrv_interval,
                |i| async move { i.refresh_routes().await },
            ))
            .abort_handle(),
            tokio::spawn(every(
                weak,
                instance.config.heartbeat_interval,
                |i| async move {
                    i.heartbeat_all().await;
                },
            ))
            .abort_handle(),
        ];
        *instance
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = tasks;
        tracing::info!(client_id = %instance.client_id, "client started");
        Ok(instance)
    }

    /// A fresh `UNIQ_KEY`.
    pub(crate) fn next_uniq_id(&self) -> String {
        let since = self.config.clock.now_ms().wrapping_sub(self.uniq.start_ms) as i32;
        let counter = self.uniq.counter.fetch_add(1, Ordering::Relaxed);
        protocol::message::uniq_id(self.uniq.ip, self.uniq.pid, self.uniq.hash, since, counter)
    }

    /// Sends `request` to `addr`, waiting up to `timeout`.
    ///
    /// # Errors
    /// [`ClientError::Remoting`].
    pub(crate) async fn call(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ClientError> {
        let code = request.code;
        tokio::time::timeout(timeout, self.remoting.request(addr, request, timeout))
            .await
            .map_err(|_| remoting::ClientError::Timeout {
                code,
                addr: addr.to_string(),
                after: timeout,
            })?
            .map_err(ClientError::from)
    }

    /// Sends `request` to `addr` as oneway.
    ///
    /// # Errors
    /// [`ClientError::Remoting`].
    pub(crate) async fn oneway(
        &self,
        addr: &str,
        request: RemotingCommand,
    ) -> Result<(), ClientError> {
        let code = request.code;
        let timeout = self.config.request_timeout;
        tokio::time::timeout(timeout, self.remoting.oneway(addr, request))
            .await
            .map_err(|_| remoting::ClientError::Timeout {
                code,
                addr: addr.to_string(),
                after: timeout,
            })?
            .map_err(ClientError::from)
    }

    /// Asks the name servers for `topic`'s route, starting with the one that answered last.
    /// `None` when the servers that answered do not know the topic.
    ///
    /// # Errors
    /// The last failure when no name server answered.
    async fn fetch_route(&self, topic: &str) -> Result<Option<TopicRouteData>, ClientError> {
        let addrs = &self.config.namesrv_addrs;
        let first = self.namesrv_next.load(Ordering::Relaxed);
        let mut not_found = false;
        let mut last = None;
        for i in 0..addrs.len() {
            let at = (first + i) % addrs.len();
            let addr = &addrs[at];
            let header = GetRouteInfoRequestHeader {
                topic: topic.to_string(),
                accept_standard_json_only: None,
            };
            let request =
                RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, header.to_ext());
            match self.call(addr, request, self.config.request_timeout).await {
                Ok(answer) if answer.code == response::SUCCESS => {
                    match body::parse::<TopicRouteData>(&answer.body, "route") {
                        Ok(route) => {
                            self.namesrv_next.store(at, Ordering::Relaxed);
                            return Ok(Some(route));
                        }
                        Err(source) => {
                            last = Some(ClientError::Body {
                                addr: addr.clone(),
                                source,
                            });
                        }
                    }
                }
                Ok(answer) if answer.code == response::TOPIC_NOT_EXIST => not_found = true,
                Ok(answer) => last = Some(refused(addr, request::GET_ROUTEINFO_BY_TOPIC, &answer)),
                Err(err) => {
                    tracing::debug!(namesrv = %addr, cause = %err, topic, "route lookup failed");
                    last = Some(err);
                }
            }
        }
        match (not_found, last) {
            (true, _) | (false, None) => Ok(None),
            (false, Some(err)) => Err(err),
        }
    }

    /// Caches a route, refreshes the broker table, greets new brokers and wakes the
    /// rebalance when a watched topic's route changed.
    fn store_route(
        self: &Arc<Self>,
        topic: &str,
        data: TopicRouteData,
        template: Option<(String, i32)>,
    ) {
        let (changed, new_addrs) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = state
                .routes
                .get(topic)
                .is_none_or(|old| old.data != data || old.template != template);
            if !state.routes.contains_key(topic) && state.routes.len() >= limits::ROUTES_CACHED_MAX
            {
                tracing::warn!(topic, max = limits::ROUTES_CACHED_MAX, "route cache full");
                return;
            }
            state.rebuild_brokers(&data);
            state
                .routes
                .insert(topic.to_string(), CachedRoute { data, template });
            let consumer = !self.heartbeat.consumer_data_set.is_empty();
            let new_addrs: Vec<String> = state
                .heartbeat_addrs(consumer)
                .into_iter()
                .filter(|a| !state.greeted.contains(a))
                .collect();
            state.greeted.extend(new_addrs.iter().cloned());
            let watched = state.watched.contains(topic);
            (changed && watched, new_addrs)
        };
        if !new_addrs.is_empty() {
            let this = self.clone();
            tokio::spawn(async move {
                this.heartbeat_to(new_addrs).await;
            });
        }
        if changed {
            self.rebalance.notify_one();
        }
    }

    /// Fetches and caches `topic`'s route. `None` when no name server knows it; the cached
    /// route, if any, stays.
    ///
    /// # Errors
    /// No name server answered.
    pub(crate) async fn update_route(
        self: &Arc<Self>,
        topic: &str,
    ) -> Result<Option<TopicRouteData>, ClientError> {
        let route = self.fetch_route(topic).await?;
        if let Some(route) = &route {
            self.store_route(topic, route.clone(), None);
        }
        Ok(route)
    }

    /// The cached route of `topic`.
    pub(crate) fn cached_route(&self, topic: &str) -> Option<TopicRouteData> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.routes.get(topic).map(|r| r.data.clone())
    }

    /// The route of `topic`, cached or fetched.
    ///
    /// # Errors
    /// No name server answered.
    pub(crate) async fn route(
        self: &Arc<Self>,
        topic: &str,
    ) -> Result<Option<TopicRouteData>, ClientError> {
        match self.cached_route(topic) {
            Some(route) => Ok(Some(route)),
            None => self.update_route(topic).await,
        }
    }

    /// The route a producer publishes `topic` on: the cached one if it has publish queues,
    /// else a fresh one, else the `template` topic's route capped to `queue_nums` queues (the
    /// broker creates the topic on the first send).
    ///
    /// # Errors
    /// [`ClientError::NoRoute`] when neither route exists, or a name server failure.
    pub(crate) async fn publish_route(
        self: &Arc<Self>,
        topic: &str,
        template: &str,
        queue_nums: i32,
    ) -> Result<TopicRouteData, ClientError> {
        if let Some(route) = self
            .cached_route(topic)
            .filter(|r| !route::publish_queues(topic, r).is_empty())
        {
            return Ok(route);
        }
        if let Some(route) = self.update_route(topic).await? {
            return Ok(route);
        }
        let Some(template_route) = self.fetch_route(template).await? else {
            return Err(ClientError::NoRoute {
                topic: topic.to_string(),
            });
        };
        let route = route::from_template(template_route, queue_nums);
        tracing::debug!(
            topic,
            template,
            "no route: publishing on the template's brokers"
        );
        self.store_route(
            topic,
            route.clone(),
            Some((template.to_string(), queue_nums)),
        );
        Ok(route)
    }

    /// Refreshes `topic`'s route now (after a send failed for a reason a new route may fix).
    /// Failures keep the cached route and are only logged.
    pub(crate) async fn refresh_route(self: &Arc<Self>, topic: &str) {
        let template = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.routes.get(topic).and_then(|r| r.template.clone())
        };
        match self.fetch_route(topic).await {
            Ok(Some(route)) => self.store_route(topic, route, None),
            Ok(None) => {
                if let Some((template, queue_nums)) = template
                    && let Ok(Some(route)) = self.fetch_route(&template).await
                {
                    let route = route::from_template(route, queue_nums);
                    self.store_route(topic, route, Some((template, queue_nums)));
                }
            }
            Err(err) => tracing::debug!(topic, cause = %err, "route refresh failed"),
        }
    }

    /// Refreshes every cached and watched topic (the periodic poll).
    async fn refresh_routes(self: Arc<Self>) {
        let topics: BTreeSet<String> = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .routes
                .keys()
                .chain(state.watched.iter())
                .cloned()
                .collect()
        };
        for topic in topics {
            self.refresh_route(&topic).await;
        }
    }

    /// Refreshes `topic` every poll even while it has no route.
    pub(crate) fn watch(&self, topic: &str) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .watched
            .insert(topic.to_string());
    }

    /// The master address of a broker group.
    pub(crate) fn master_addr(&self, broker_name: &str) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.brokers.get(broker_name)?.get(&MASTER_ID).cloned()
    }

    /// Where to send a queue's offset commit or query: the master, else any replica.
    pub(crate) fn offset_addr(&self, broker_name: &str) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let addrs = state.brokers.get(broker_name)?;
        route::subscribe_addr(addrs, MASTER_ID).map(|(_, a)| a.to_string())
    }

    /// Where to pull `queue` from: the broker id the last answer suggested, or a fallback.
    pub(crate) fn pull_addr(&self, queue: &MessageQueue) -> Option<(i64, String)> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let wanted = state.pull_from.get(queue).copied().unwrap_or(MASTER_ID);
        let addrs = state.brokers.get(&queue.broker_name)?;
        route::subscribe_addr(addrs, wanted).map(|(id, a)| (id, a.to_string()))
    }

    /// Records the broker id a pull answer suggested for `queue`.
    pub(crate) fn set_pull_from(&self, queue: &MessageQueue, broker_id: i64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if broker_id == MASTER_ID {
            state.pull_from.remove(queue);
        } else {
            state.pull_from.insert(queue.clone(), broker_id);
        }
    }

    /// A broker serving `topic`, for group-wide questions (consumer lists): the first group's
    /// master, else any replica.
    pub(crate) fn any_broker_addr(&self, route: &TopicRouteData) -> Option<String> {
        let mut datas: Vec<_> = route.broker_datas.iter().collect();
        datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
        datas.iter().find_map(|d| {
            route::subscribe_addr(&d.broker_addrs, MASTER_ID).map(|(_, a)| a.to_string())
        })
    }

    /// Sends a heartbeat to every broker of the cached routes; returns how many accepted it.
    pub(crate) async fn heartbeat_all(&self) -> usize {
        let consumer = !self.heartbeat.consumer_data_set.is_empty();
        let addrs: Vec<String> = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let addrs = state.heartbeat_addrs(consumer);
            state.greeted.extend(addrs.iter().cloned());
            addrs.into_iter().collect()
        };
        self.heartbeat_to(addrs).await
    }

    async fn heartbeat_to(&self, addrs: Vec<String>) -> usize {
        let body = bytes::Bytes::from(body::to_json(&self.heartbeat));
        let calls = addrs.iter().map(|addr| {
            let request = RemotingCommand::request(request::HEART_BEAT, BTreeMap::new())
                .with_body(body.clone());
            async move {
                match self.call(addr, request, self.config.request_timeout).await {
                    Ok(answer) if answer.code == response::SUCCESS => true,
                    Ok(answer) => {
                        let err = refused(addr, request::HEART_BEAT, &answer);
                        tracing::warn!(broker = %addr, cause = %err, "heartbeat refused");
                        false
                    }
                    Err(err) => {
                        tracing::debug!(broker = %addr, cause = %err, "heartbeat failed");
                        false
                    }
                }
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Unregisters the client from every broker it knows, then stops the background tasks.
    pub(crate) async fn shutdown(
        &self,
        producer_group: Option<&str>,
        consumer_group: Option<&str>,
    ) {
        let addrs: BTreeSet<String> = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .brokers
                .values()
                .flat_map(|a| a.values().cloned())
                .chain(state.greeted.iter().cloned())
                .collect()
        };
        let header = UnregisterClientRequestHeader {
            client_id: self.client_id.clone(),
            producer_group: producer_group.map(str::to_string),
            consumer_group: consumer_group.map(str::to_string),
        };
        let calls = addrs.iter().map(|addr| {
            let request = RemotingCommand::request(request::UNREGISTER_CLIENT, header.to_ext());
            async move {
                if let Err(err) = self.call(addr, request, self.config.request_timeout).await {
                    tracing::debug!(broker = %addr, cause = %err, "unregister failed");
                }
            }
        });
        futures_util::future::join_all(calls).await;
        for task in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner))
        {
            task.abort();
        }
        tracing::info!(client_id = %self.client_id, "client shut down");
    }

    /// Makes this client answer the brokers' transaction checks for `group` with `checker`.
    pub(crate) fn set_transaction_checker(&self, group: String, checker: TransactionChecker) {
        *self
            .transaction_checker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((group, checker));
    }

    fn on_server_request(self: &Arc<Self>, addr: &str, command: RemotingCommand) {
        match command.code {
            request::NOTIFY_CONSUMER_IDS_CHANGED => {
                tracing::debug!(broker = %addr, "consumer ids changed: rebalancing");
                self.rebalance.notify_one();
            }
            request::CHECK_TRANSACTION_STATE => {
                let checker = self
                    .transaction_checker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let Some((group, checker)) = checker else {
                    tracing::debug!(broker = %addr, "transaction check, but this client is no transactional producer: ignored");
                    return;
                };
                tokio::spawn(crate::transaction::answer_check(
                    self.clone(),
                    checker,
                    group,
                    addr.to_string(),
                    command,
                ));
            }
            code => {
                // The admin requests need a running-info answer this client does not have.
                tracing::debug!(broker = %addr, code, "server request ignored");
            }
        }
    }
}

async fn dispatch_server_requests<T: Transport>(
    instance: Weak<Instance<T>>,
    mut inbound: mpsc::Receiver<(String, RemotingCommand)>,
) {
    while let Some((addr, command)) = inbound.recv().await {
        let Some(instance) = instance.upgrade() else {
            return;
        };
        instance.on_server_request(&addr, command);
    }
}

/// Runs `work` every `period` (first after one period) while the instance lives.
async fn every<T, F, Fut>(instance: Weak<Instance<T>>, period: Duration, work: F)
where
    T: Transport,
    F: Fn(Arc<Instance<T>>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(instance) = instance.upgrade() else {
            return;
        };
        work(instance).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client ids follow Java's `ip@pid#nanos` and differ between clients of one process even
    /// when the clock stands still.
    #[test]
    fn client_ids_are_unique_per_process() {
        struct Frozen;
        impl seams::Clock for Frozen {
            fn since_epoch(&self) -> Duration {
                Duration::from_secs(1)
            }
        }
        let mut config = ClientConfig::new(["ns:9876"]);
        config.clock = Arc::new(Frozen);
        config.process_id = 42;
        let (a, b) = (client_id(&config), client_id(&config));
        assert_ne!(a, b);
        assert!(a.starts_with("127.0.0.1@42#"), "{a}");
        config.instance_name = Some("fixed".into());
        assert_eq!(client_id(&config), "127.0.0.1@fixed");
    }
}
