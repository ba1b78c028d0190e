//! Settings of a broker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Deliberate bugs of the broker, for the simulation to show its checker catches them.
#[cfg(feature = "mutants")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Mutants {
    /// The scheduler delivers messages this many ms before they are due.
    pub deliver_early_ms: i64,
    /// Retention's cleaner takes every segment as expired, whatever its age.
    pub purge_unexpired: bool,
    /// A send reaching a full disk is stored, then refused.
    pub store_refused_sends: bool,
    /// END_TRANSACTION commits write the committed message without the half message's
    /// outcome, so a second commit of the same half message writes it again.
    pub commit_without_outcome: bool,
    /// The check service counts its checks but never sends CHECK_TRANSACTION_STATE, so a
    /// transaction whose producer did not answer is never settled.
    pub checks_unsent: bool,
}

/// Settings of one broker replica.
#[derive(Clone)]
pub struct BrokerConfig {
    /// `brokerClusterName`.
    pub cluster_name: String,
    /// `brokerName`: the replica group.
    pub broker_name: String,
    /// Address to listen on for clients.
    pub listen: String,
    /// Address registered with the name servers and written into messages as their store
    /// host: clients dial it.
    pub advertised_addr: SocketAddr,
    /// Name servers to register with.
    pub namesrv_addrs: Vec<String>,
    /// Re-registration period (RocketMQ: 30 s).
    pub register_interval: Duration,
    /// How long the name servers keep us without a registration (RocketMQ: 120 s).
    pub namesrv_timeout: Duration,
    /// Create unknown topics on first send (through TBW102).
    pub auto_create_topic: bool,
    /// Queues of TBW102 and of auto-created topics at most (RocketMQ: 8).
    pub default_topic_queues: i32,
    /// Longest message body (RocketMQ: 4 MiB).
    pub max_message_bytes: usize,
    /// Sends waiting for the writer.
    pub write_queue: usize,
    /// Most records in one Raft entry.
    pub batch_records_max: usize,
    /// Most bytes in one Raft entry.
    pub batch_bytes_max: usize,
    /// Longest a held pull waits (clients ask for 15 s; we cap it).
    pub long_poll_max: Duration,
    /// Consumers silent this long are dropped (RocketMQ: 120 s).
    pub client_timeout: Duration,
    /// Period of batching consumer-offset commits into one entry.
    pub offset_flush_interval: Duration,
    /// Wall clock for store timestamps.
    pub clock: Arc<dyn seams::Clock>,
    /// Delay levels and timer messages (`messageDelayLevel`, `timerWheelEnable`,
    /// `timerMaxDelaySec`).
    pub schedule: crate::schedule::ScheduleConfig,
    /// Retention and full disks (`fileReservedTime`, `deleteWhen`, the disk ratios, …).
    pub retention: crate::retention::RetentionConfig,
    /// Transactional messages (`transactionTimeOut`, `transactionCheckInterval`,
    /// `transactionCheckMax`, `rejectTransactionMessage`).
    pub transactions: crate::transactions::TransactionConfig,
    /// `enablePropertyFilter`: consumers may subscribe with SQL92 selectors (on by default
    /// here; RocketMQ's default is off). Off, an SQL92 subscription is refused as RocketMQ
    /// refuses it.
    pub enable_property_filter: bool,
    /// Deliberate bugs the simulation turns on; compiled only with the `mutants` feature.
    #[cfg(feature = "mutants")]
    pub mutants: Mutants,
    /// Seed of the broker's random choices (queue of a send without one); from the OS when
    /// absent. The simulation sets it so runs replay.
    pub seed: Option<u64>,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("broker_name", &self.broker_name)
            .field("listen", &self.listen)
            .field("advertised_addr", &self.advertised_addr)
            .field("namesrv_addrs", &self.namesrv_addrs)
            .finish_non_exhaustive()
    }
}

impl BrokerConfig {
    /// Defaults for a broker listening on `listen`, advertised as `advertised_addr`.
    pub fn new(
        broker_name: &str,
        listen: &str,
        advertised_addr: SocketAddr,
        namesrv_addrs: Vec<String>,
    ) -> Self {
        BrokerConfig {
            cluster_name: "DefaultCluster".into(),
            broker_name: broker_name.into(),
            listen: listen.into(),
            advertised_addr,
            namesrv_addrs,
            register_interval: Duration::from_secs(30),
            namesrv_timeout: Duration::from_secs(120),
            auto_create_topic: true,
            default_topic_queues: 8,
            max_message_bytes: 4 * 1024 * 1024,
            write_queue: 65_536,
            batch_records_max: 1024,
            batch_bytes_max: 4 * 1024 * 1024,
            long_poll_max: Duration::from_secs(25),
            client_timeout: Duration::from_secs(120),
            offset_flush_interval: Duration::from_millis(200),
            clock: Arc::new(seams::SystemClock),
            schedule: crate::schedule::ScheduleConfig::default(),
            retention: crate::retention::RetentionConfig::default(),
            transactions: crate::transactions::TransactionConfig::default(),
            enable_property_filter: true,
            #[cfg(feature = "mutants")]
            mutants: Mutants::default(),
            seed: None,
        }
    }
}
