//! One seed from start to verdict: a fault phase with invariants checked after every step, then
//! healing and a liveness phase that must converge.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dledger::Role;
use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::cluster::{Cluster, DISK_USED_NORMAL_PERMILLE, host_name};
use crate::config::{Layer, Mutant, SimConfig, rng, salt};
use crate::invariants::{Checker, NodeView, Violation};
use crate::links::Links;
use crate::messaging;
use crate::oracle::id_of;

/// What one seed's run did and found.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Replicas.
    pub nodes: u64,
    /// Simulated steps (1 ms each).
    pub steps: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Proposals acknowledged.
    pub acked: usize,
    /// Entries known committed.
    pub committed: usize,
    /// Messages consumers pulled (messaging workload; 0 in the ledger workload).
    pub consumed: usize,
    /// Scheduled (timer) messages acknowledged (messaging workload), counted in `acked` too.
    pub scheduled: usize,
    /// The first violation, if any.
    pub violation: Option<String>,
    /// Hash of the full trace (every replica's state after every step).
    pub trace_hash: String,
}

impl RunReport {
    /// The report of a run that panicked.
    pub fn panicked(seed: u64, message: String) -> RunReport {
        RunReport {
            seed,
            nodes: SimConfig::from_seed(seed).nodes,
            steps: 0,
            faults: BTreeMap::new(),
            acked: 0,
            committed: 0,
            consumed: 0,
            scheduled: 0,
            violation: Some(format!("panic: {message}")),
            trace_hash: String::new(),
        }
    }
}

/// Options beyond the seed.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// A deliberate bug to switch on.
    pub mutant: Option<Mutant>,
    /// Set to the number of steps finished after each one, for a watchdog outside the run: a
    /// task that never yields keeps one step from ever finishing, which nothing inside the
    /// simulation can see.
    pub progress: Option<Arc<AtomicU64>>,
    /// The layers under test.
    pub layer: Layer,
}

/// A disk that reads full: past `diskSpaceWarningLevelRatio` (90 %).
const DISK_FULL_PERMILLE: u64 = 920;

enum Event {
    Repair(u64, u64),
    RepairOneway(u64, u64),
    Release(u64, u64),
    LinkLossEnd(u64, u64),
    DelayEnd(u64, u64),
    Restart(u64),
    /// End of a partition between a replica and a host outside the group.
    RepairEdge(u64, String),
    /// End of an episode of a replica's disk reading full.
    DiskFreed(u64),
}

struct Driver<'a> {
    sim: turmoil::Sim<'a>,
    cluster: Cluster,
    /// The layers under test.
    layer: Layer,
    /// The name server's registry (messaging workload).
    registry: messaging::RegistrySlot,
    checker: Checker,
    rng: StdRng,
    events: BTreeMap<u64, Vec<Event>>,
    /// Faults between replicas and the hosts outside the group (messaging workload): a stream
    /// of its own, so the replicas' fault schedule is the ledger workload's.
    edge_rng: StdRng,
    /// Isolations of one replica from all others: a stream of its own, so the other faults'
    /// schedules are what they were before it existed.
    isolation_rng: StdRng,
    /// Episodes of full disks (messaging workload): a stream of its own.
    full_disk_rng: StdRng,
    /// Which links between replicas deliver, as the driver set them.
    links: Links,
    /// Replicas that cannot reach a quorum now, with the step since which they could not.
    cut_since: BTreeMap<u64, u64>,
    down: BTreeMap<u64, bool>,
    faults: BTreeMap<String, u64>,
    step: u64,
    trace: u64,
    progress: Option<Arc<AtomicU64>>,
}

/// Longest a message takes on a healthy link.
const MESSAGE_LATENCY_MAX: Duration = Duration::from_millis(5);

/// FNV-1a, 64 bits: a stable hash for the trace.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Runs `seed` and returns its report; a violation is in `report.violation`.
pub fn run_seed(seed: u64, options: &RunOptions) -> RunReport {
    let config = SimConfig::from_seed(seed);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(MESSAGE_LATENCY_MAX)
        .enable_random_order()
        .tcp_capacity(1 << 16)
        .build();
    // The messaging workload's name-server registry, for the driver to read routes from.
    let registry: messaging::RegistrySlot = Arc::default();
    let workload: Arc<dyn crate::cluster::Workload> = match options.layer {
        Layer::Ledger => Arc::new(crate::proposers::Proposers),
        Layer::Broker => Arc::new(messaging::Messaging {
            registry: registry.clone(),
        }),
    };
    let cluster = Cluster::new(config.clone(), options.mutant, workload);
    for id in 1..=config.nodes {
        let cluster = cluster.clone();
        sim.host(host_name(id), move || cluster.clone().run_host(id));
    }
    if options.layer == Layer::Broker {
        let registry = registry.clone();
        sim.host(messaging::NAMESRV_HOST, move || {
            messaging::run_namesrv(registry.clone())
        });
        for k in 1..=messaging::CLIENT_HOSTS {
            let cluster = cluster.clone();
            sim.host(messaging::client_host_name(k), move || {
                messaging::run_client_host(cluster.clone(), k)
            });
        }
    }
    let mut driver = Driver {
        sim,
        cluster,
        layer: options.layer,
        registry,
        checker: Checker::default(),
        rng: rng(seed, salt::FAULTS),
        edge_rng: rng(seed, salt::EDGE_FAULTS),
        isolation_rng: rng(seed, salt::ISOLATIONS),
        full_disk_rng: rng(seed, salt::FULL_DISKS),
        links: Links::default(),
        cut_since: BTreeMap::new(),
        events: BTreeMap::new(),
        down: (1..=config.nodes).map(|id| (id, false)).collect(),
        faults: BTreeMap::new(),
        step: 0,
        trace: 0xcbf2_9ce4_8422_2325,
        progress: options.progress.clone(),
    };
    let violation = driver.run(&config).err();
    let (acked, consumed, scheduled) = {
        let oracle = driver.cluster.oracle.lock().expect("oracle");
        (
            oracle.acked.len() + oracle.sends.len() + oracle.scheduled.len(),
            oracle.consumed.len(),
            oracle.scheduled.len(),
        )
    };
    for slot in driver.cluster.slots.lock().expect("slots").values() {
        let counts = slot.disk.fault_counts();
        *driver.faults.entry("sync_failures".into()).or_default() += counts.syncs_failed;
        *driver.faults.entry("torn_sectors".into()).or_default() += counts.sectors_torn;
        *driver.faults.entry("disk_full".into()).or_default() += counts.full_refusals;
        *driver.faults.entry("corrupt_reads".into()).or_default() += counts.reads_corrupted;
    }
    RunReport {
        seed,
        nodes: config.nodes,
        steps: driver.step,
        faults: driver.faults,
        acked,
        committed: driver.checker.canonical_len(),
        consumed,
        scheduled,
        violation: violation.map(|v| v.to_string()),
        trace_hash: format!("{:016x}", driver.trace),
    }
}

impl Driver<'_> {
    fn run(&mut self, config: &SimConfig) -> Result<(), Violation> {
        for _ in 0..config.fault_steps {
            self.maybe_inject(config);
            self.tick()?;
        }
        self.heal();
        self.liveness(config)
    }

    fn count(&mut self, kind: &str) {
        *self.faults.entry(kind.to_string()).or_default() += 1;
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.events
            .entry(self.step + after)
            .or_default()
            .push(event);
    }

    fn pair(&mut self, nodes: u64) -> (u64, u64) {
        let a = self.rng.random_range(1..=nodes);
        let mut b = self.rng.random_range(1..nodes);
        if b >= a {
            b += 1;
        }
        (a, b)
    }

    /// Messaging workload: now and then cuts a replica off from a client host or the name
    /// server for a while.
    fn maybe_inject_edge(&mut self, config: &SimConfig) {
        if self.layer != Layer::Broker || !self.edge_rng.random_bool(config.fault_odds / 2.0) {
            return;
        }
        let id = self.edge_rng.random_range(1..=config.nodes);
        let other = self.edge_rng.random_range(0..=messaging::CLIENT_HOSTS);
        let host = if other == 0 {
            messaging::NAMESRV_HOST.to_string()
        } else {
            messaging::client_host_name(other)
        };
        // Toward the name server, either hold messages (a partition that heals, TCP
        // retransmitting) or lose them (a connection left dead for good: the broker must dial
        // afresh after a failed registration; seed 72 found it kept the dead one).
        let kind = if other != 0 {
            self.sim.partition(host_name(id), host.clone());
            "partition_client"
        } else if self.edge_rng.random_bool(0.5) {
            self.sim.hold(host_name(id), host.clone());
            "hold_namesrv"
        } else {
            self.sim.partition(host_name(id), host.clone());
            "partition_namesrv"
        };
        let after = self.edge_rng.random_range(100..3_000);
        self.schedule(after, Event::RepairEdge(id, host));
        self.count(kind);
    }

    /// Now and then cuts one replica off from every other for a while: both ways, or only what
    /// it receives (it can send but not hear: its followers may still get its heartbeats), or
    /// only what it sends. A leader cut off must stop taking writes within its lease.
    fn maybe_inject_isolation(&mut self, config: &SimConfig) {
        if !self.isolation_rng.random_bool(config.isolation_odds) {
            return;
        }
        let id = self.isolation_rng.random_range(1..=config.nodes);
        let kind = self.isolation_rng.random_range(0..3);
        let after = self.isolation_rng.random_range(200..2_500);
        for other in (1..=config.nodes).filter(|other| *other != id) {
            let (me, them) = (host_name(id), host_name(other));
            match kind {
                0 => {
                    self.sim.partition(me, them);
                    self.links.partition(id, other);
                    self.schedule(after, Event::Repair(id, other));
                }
                1 => {
                    self.sim.partition_oneway(them, me);
                    self.links.partition_oneway(other, id);
                    self.schedule(after, Event::RepairOneway(other, id));
                }
                _ => {
                    self.sim.partition_oneway(me, them);
                    self.links.partition_oneway(id, other);
                    self.schedule(after, Event::RepairOneway(id, other));
                }
            }
        }
        self.count(match kind {
            0 => "isolation",
            1 => "isolation_deaf",
            _ => "isolation_mute",
        });
    }

    /// Now and then (messaging workload) a replica's disk reads full (92 %: past the warning
    /// ratio) for a while: leading, its broker refuses sends, and takes them again once the disk
    /// reads half full.
    fn maybe_fill_disk(&mut self, config: &SimConfig) {
        if self.layer != Layer::Broker || !self.full_disk_rng.random_bool(config.full_disk_odds) {
            return;
        }
        let id = self.full_disk_rng.random_range(1..=config.nodes);
        let after = self.full_disk_rng.random_range(200..2_000);
        self.set_disk_used(id, DISK_FULL_PERMILLE);
        self.schedule(after, Event::DiskFreed(id));
        self.count("disk_full_episode");
    }

    fn set_disk_used(&self, id: u64, permille: u64) {
        if let Some(used) = self.cluster.disk_used_permille.get(&id) {
            used.store(permille, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Updates which replicas cannot reach a quorum (counting themselves), and since when.
    fn track_quorum_reach(&mut self) {
        let nodes = self.cluster.config.nodes;
        let quorum = nodes / 2 + 1;
        for id in 1..=nodes {
            let reach = 1
                + (1..=nodes)
                    .filter(|peer| {
                        *peer != id && !self.down[peer] && self.links.round_trip(id, *peer)
                    })
                    .count() as u64;
            if self.down[&id] || reach >= quorum {
                self.cut_since.remove(&id);
            } else {
                self.cut_since.entry(id).or_insert(self.step);
            }
        }
    }

    fn maybe_inject(&mut self, config: &SimConfig) {
        self.maybe_inject_edge(config);
        self.maybe_inject_isolation(config);
        self.maybe_fill_disk(config);
        if !self.rng.random_bool(config.fault_odds) {
            return;
        }
        let (a, b) = self.pair(config.nodes);
        let (ha, hb) = (host_name(a), host_name(b));
        match self.rng.random_range(0..8) {
            0 => {
                self.sim.partition(ha, hb);
                self.links.partition(a, b);
                let after = self.rng.random_range(100..3_000);
                self.schedule(after, Event::Repair(a, b));
                self.count("partition");
            }
            1 => {
                self.sim.partition_oneway(ha, hb);
                self.links.partition_oneway(a, b);
                let after = self.rng.random_range(100..3_000);
                self.schedule(after, Event::RepairOneway(a, b));
                self.count("partition_oneway");
            }
            2 => {
                self.sim.hold(ha, hb);
                self.links.hold(a, b);
                let after = self.rng.random_range(20..800);
                self.schedule(after, Event::Release(a, b));
                self.count("hold");
            }
            3 => {
                let rate = self.rng.random_range(0.01..0.2);
                self.sim.set_link_fail_rate(ha, hb, rate);
                self.links.lossy(a, b);
                let after = self.rng.random_range(100..2_000);
                self.schedule(after, Event::LinkLossEnd(a, b));
                self.count("message_loss");
            }
            4 | 5 => {
                if self.down[&a] {
                    return;
                }
                let long = self.rng.random_bool(0.25);
                let range = if long {
                    config.long_outage.clone()
                } else {
                    config.short_outage.clone()
                };
                let after = self.rng.random_range(range);
                self.crash(a);
                self.schedule(after, Event::Restart(a));
                self.count(if long { "crash_long" } else { "crash" });
            }
            6 => {
                let max = Duration::from_millis(self.rng.random_range(20..300));
                self.sim.set_link_max_message_latency(ha, hb, max);
                let after = self.rng.random_range(100..2_000);
                self.schedule(after, Event::DelayEnd(a, b));
                self.count("delay");
            }
            7 => {
                // A power cut of several machines at once (one rack): only what each had synced
                // survives, which is what acknowledging after a quorum's fsync must survive.
                let count = self.rng.random_range(2..=config.nodes);
                let mut victims: Vec<u64> =
                    (1..=config.nodes).filter(|id| !self.down[id]).collect();
                while victims.len() as u64 > count {
                    let drop = self.rng.random_range(0..victims.len());
                    victims.remove(drop);
                }
                let after = self.rng.random_range(config.short_outage.clone());
                for id in victims {
                    self.crash(id);
                    self.schedule(after, Event::Restart(id));
                }
                self.count("power_cut");
            }
            _ => unreachable!("range is 0..8"),
        }
    }

    /// Power loss of replica `id`: its host stops and its disk keeps only what was synced.
    fn crash(&mut self, id: u64) {
        self.sim.crash(host_name(id));
        let mut slots = self.cluster.slots.lock().expect("slots");
        let slot = slots.get_mut(&id).expect("slot");
        slot.disk = slot.disk.crash();
        slot.ledger = None;
        slot.store = None;
        slot.broker = None;
        self.down.insert(id, true);
    }

    fn restart(&mut self, id: u64) {
        if self.down[&id] {
            self.sim.bounce(host_name(id));
            self.down.insert(id, false);
        }
    }

    fn handle_events(&mut self) {
        let Some(events) = self.events.remove(&self.step) else {
            return;
        };
        for event in events {
            match event {
                Event::Repair(a, b) => {
                    self.sim.repair(host_name(a), host_name(b));
                    self.links.heal(a, b);
                }
                Event::RepairOneway(a, b) => {
                    self.sim.repair_oneway(host_name(a), host_name(b));
                    self.links.repair_oneway(a, b);
                }
                Event::Release(a, b) => {
                    self.sim.release(host_name(a), host_name(b));
                    self.links.heal(a, b);
                }
                Event::LinkLossEnd(a, b) => {
                    self.sim.set_link_fail_rate(host_name(a), host_name(b), 0.0);
                    self.links.loss_ended(a, b);
                }
                Event::DelayEnd(a, b) => self.sim.set_link_max_message_latency(
                    host_name(a),
                    host_name(b),
                    MESSAGE_LATENCY_MAX,
                ),
                Event::Restart(id) => self.restart(id),
                Event::DiskFreed(id) => self.set_disk_used(id, DISK_USED_NORMAL_PERMILLE),
                Event::RepairEdge(id, host) => {
                    self.sim.repair(host_name(id), host.clone());
                    self.sim.release(host_name(id), host);
                }
            }
        }
    }

    /// A replica whose storage failed (a sync error, a full disk) stops itself; the driver
    /// treats that as a crash and restarts it a little later.
    ///
    /// A full disk must not stop a replica: it waits for space and goes on by itself
    /// (`disk_full_waits`).
    fn restart_stopped(&mut self) -> Result<(), Violation> {
        let stopped: Vec<u64> = {
            let slots = self.cluster.slots.lock().expect("slots");
            if let Some((id, slot)) = slots.iter().find(|(_, slot)| {
                slot.ledger
                    .as_ref()
                    .is_some_and(|l| l.stopped_on_full_disk())
            }) {
                let reason = slot.ledger.as_ref().and_then(|l| l.fatal());
                return Err(Violation {
                    invariant: "disk_full_waits",
                    detail: format!(
                        "replica {id} stopped on a full disk instead of waiting for space: {reason:?}"
                    ),
                });
            }
            slots
                .iter()
                .filter(|(id, slot)| {
                    let stopped = slot
                        .ledger
                        .as_ref()
                        .is_some_and(|l| l.status().role == Role::Shutdown);
                    !self.down[id] && (stopped || slot.start_io_error.is_some())
                })
                .map(|(id, _)| *id)
                .collect()
        };
        for id in stopped {
            self.crash(id);
            let after = self.rng.random_range(50..500);
            self.schedule(after, Event::Restart(id));
            self.count("storage_stop");
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), Violation> {
        self.handle_events();
        self.track_quorum_reach();
        if let Err(err) = self.sim.step() {
            return Err(Violation {
                invariant: "simulation",
                detail: err.to_string(),
            });
        }
        self.step += 1;
        if let Some(progress) = &self.progress {
            progress.store(self.step, Ordering::Relaxed);
        }
        if self.step.is_multiple_of(1000) {
            tracing::info!(step = self.step, "simulation progress");
        }
        self.restart_stopped()?;
        self.check()
    }

    fn check(&mut self) -> Result<(), Violation> {
        self.pause_disk_faults(true);
        let result = self.check_unpaused();
        self.pause_disk_faults(false);
        result
    }

    /// The checker reads logs from outside the replicas: it must see what is on disk.
    fn pause_disk_faults(&self, paused: bool) {
        for slot in self.cluster.slots.lock().expect("slots").values() {
            slot.disk.pause_faults(paused);
        }
    }

    fn check_unpaused(&mut self) -> Result<(), Violation> {
        let slots = self.cluster.slots.lock().expect("slots");
        for (id, slot) in slots.iter() {
            if let Some(err) = &slot.start_error {
                return Err(Violation {
                    invariant: "restart",
                    detail: format!("node {id} refused to start after a crash: {err}"),
                });
            }
        }
        let views: Vec<NodeView<'_>> = slots
            .iter()
            .filter(|(id, _)| !self.down[id])
            .filter_map(|(id, slot)| {
                let ledger = slot.ledger.as_ref()?;
                let serving_writes = match self.layer {
                    Layer::Ledger => ledger.watch_role().borrow().leads_with_quorum(),
                    Layer::Broker => slot.broker.as_ref().is_some_and(|b| b.serving_writes()),
                };
                Some(NodeView {
                    id: *id,
                    incarnation: slot.incarnation,
                    status: ledger.status(),
                    ledger,
                    applied: slot.machine.records(),
                    store: slot.store.as_deref(),
                    serving_writes,
                })
            })
            .collect();
        for view in &views {
            let s = &view.status;
            let line = format!(
                "{}:{}:{:?}:{}:{:?}:{:?}:{:?}:{:?};",
                self.step,
                s.node_id,
                s.role,
                s.term,
                s.leader,
                s.last_log_index,
                s.committed,
                s.applied
            );
            self.trace = fnv(self.trace, line.as_bytes());
            if let Some(store) = view.store {
                let line = format!("{:?}:{};", store.last_applied(), store.applied_end());
                self.trace = fnv(self.trace, line.as_bytes());
            }
        }
        for view in &views {
            view.ledger.check_invariants();
        }
        let acked = self.cluster.oracle.lock().expect("oracle").acked.clone();
        self.checker.check(&views, &acked)?;
        self.checker.check_quorum(
            &views,
            &self.cut_since,
            self.step,
            self.cluster.config.election_max_ms,
        )?;
        if self.layer == Layer::Broker {
            self.checker.check_messaging(&views)?;
            // Without retention the broker's default (72 h) applies.
            let reserved_ms = self.cluster.config.retention_ms.unwrap_or(72 * 3_600_000);
            // The clock the hosts read (`SimClock`), from outside them.
            let now_ms = (crate::transport::EPOCH + self.sim.elapsed()).as_millis() as i64;
            let oracle = self.cluster.oracle.lock().expect("oracle");
            self.checker
                .check_retention(&views, &oracle.sends, reserved_ms, now_ms)?;
            if let Some(first) = oracle.early.first() {
                return Err(Violation {
                    invariant: "scheduled_not_before_due",
                    detail: first.clone(),
                });
            }
            if let Some(first) = oracle.transaction_breaches.first() {
                return Err(Violation {
                    invariant: "transaction_not_before_commit",
                    detail: first.clone(),
                });
            }
            if let Some(first) = oracle.consume_errors.first() {
                return Err(Violation {
                    invariant: "consumed_in_order",
                    detail: first.clone(),
                });
            }
        }
        Ok(())
    }

    fn heal(&mut self) {
        let nodes = self.cluster.config.nodes;
        for a in 1..=nodes {
            for b in 1..=nodes {
                if a != b {
                    self.sim.repair(host_name(a), host_name(b));
                    self.sim.release(host_name(a), host_name(b));
                    self.sim.set_link_fail_rate(host_name(a), host_name(b), 0.0);
                    self.links.loss_ended(a, b);
                    self.links.heal(a, b);
                    self.sim.set_link_max_message_latency(
                        host_name(a),
                        host_name(b),
                        MESSAGE_LATENCY_MAX,
                    );
                }
            }
        }
        if self.layer == Layer::Broker {
            let mut outside = vec![messaging::NAMESRV_HOST.to_string()];
            outside.extend((1..=messaging::CLIENT_HOSTS).map(messaging::client_host_name));
            for id in 1..=nodes {
                for host in &outside {
                    self.sim.repair(host_name(id), host.clone());
                    self.sim.release(host_name(id), host.clone());
                }
            }
        }
        for slot in self.cluster.slots.lock().expect("slots").values() {
            slot.disk.heal();
        }
        for id in 1..=nodes {
            self.set_disk_used(id, DISK_USED_NORMAL_PERMILLE);
        }
        self.events.clear();
        for id in 1..=nodes {
            self.restart(id);
        }
    }

    /// After healing: one leader all agree on, a new write acknowledged, then (quiet) every
    /// replica converged and every acknowledged entry readable everywhere at its index.
    fn liveness(&mut self, config: &SimConfig) -> Result<(), Violation> {
        let acked_at_heal = self.acked_count();
        let deadline = self.step + config.liveness_steps;
        let mut quiet_since = None;
        while self.step < deadline {
            self.tick()?;
            let state = self.converged();
            let acked_now = self.acked_count();
            match quiet_since {
                None if state.leader.is_some() && acked_now > acked_at_heal => {
                    self.cluster.quiet.store(true, Ordering::Relaxed);
                    quiet_since = Some(self.step);
                }
                Some(_)
                    if state.converged
                        && self.route_converged(state.leader)
                        && self.consumers_caught_up() =>
                {
                    return match self.layer {
                        Layer::Ledger => self.all_acked_readable(),
                        Layer::Broker => self.all_sends_consumable(),
                    };
                }
                _ => {}
            }
        }
        let state = self.converged();
        // Everything settled but a committed transaction: name it.
        let commits_only = state.converged
            && self.route_converged(state.leader)
            && self.consumers_caught_up_but_commits();
        if commits_only && let Some((consumer, id)) = self.committed_not_received() {
            return Err(Violation {
                invariant: "transaction_visible_after_commit",
                detail: format!(
                    "committed transaction id {id} never reached consumer {consumer:#x} in the {} steps after healing (leader {:?})",
                    config.liveness_steps, state.leader
                ),
            });
        }
        // SIM_DEBUG=1: what each store holds when a run does not converge.
        if std::env::var("SIM_DEBUG").is_ok() && self.layer == Layer::Broker {
            let slots = self.cluster.slots.lock().expect("slots");
            for (id, slot) in slots.iter() {
                if let Some(store) = slot.store.as_deref() {
                    eprintln!(
                        "node {id}: timers {:?} retention {:?} queue0 {}..{}",
                        store.timer_stats(),
                        store.retention(),
                        store.min_offset(crate::messaging::TOPIC, 0),
                        store.max_offset(crate::messaging::TOPIC, 0)
                    );
                }
            }
            let oracle = self.cluster.oracle.lock().expect("oracle");
            eprintln!("skipped {:?}", oracle.skipped);
            let last: Vec<_> = oracle
                .consumed
                .iter()
                .filter(|c| c.queue_id == 0)
                .rev()
                .take(3)
                .collect();
            eprintln!("last consumed on queue 0 {last:?}");
        }
        let route = if self.layer == Layer::Broker {
            format!(
                ", namesrv lists the leader as master: {}, consumers caught up: {}",
                self.route_converged(state.leader),
                self.consumers_caught_up()
            )
        } else {
            String::new()
        };
        Err(Violation {
            invariant: "liveness",
            detail: format!(
                "not converged {} steps after healing: leader {:?}, quiet since {quiet_since:?}, {}{route}",
                config.liveness_steps, state.leader, state.summary
            ),
        })
    }

    /// Messaging workload: the name server lists the leader as the group's master (always
    /// true in the ledger workload).
    fn route_converged(&self, leader: Option<u64>) -> bool {
        if self.layer != Layer::Broker {
            return true;
        }
        let Some(leader) = leader else { return false };
        let Some(registry) = self.registry.lock().expect("registry slot").clone() else {
            return false;
        };
        let master = self.sim.lookup(host_name(leader));
        let master = std::net::SocketAddr::new(master, messaging::BROKER_PORT).to_string();
        let info = registry.lock().expect("registry").cluster_info();
        info.broker_addr_table
            .values()
            .any(|b| b.broker_addrs.get(&0) == Some(&master))
    }

    /// Messaging workload: every consumer has pulled each queue past its last acknowledged
    /// message and received every scheduled message and committed transaction (always true in
    /// the ledger workload).
    fn consumers_caught_up(&self) -> bool {
        self.consumers_caught_up_but_commits() && self.committed_not_received().is_none()
    }

    /// Messaging workload: every consumer has pulled each queue past its last acknowledged
    /// message and received every scheduled one.
    fn consumers_caught_up_but_commits(&self) -> bool {
        if self.layer != Layer::Broker {
            return true;
        }
        let oracle = self.cluster.oracle.lock().expect("oracle");
        let mut ends = BTreeMap::new();
        for ack in &oracle.sends {
            let end = ends.entry(ack.queue_id).or_insert(0);
            *end = ack.queue_offset.saturating_add(1).max(*end);
        }
        let due: Vec<(u64, i32)> = oracle
            .scheduled
            .iter()
            .map(|s| (s.id, s.queue_id))
            .collect();
        messaging::consumers_caught_up(&oracle.consumed, &ends, &due, &oracle.skipped)
    }

    /// Messaging workload: the first (consumer, id) of a committed transaction that a consumer
    /// has not received (`None` in the ledger workload).
    fn committed_not_received(&self) -> Option<(u64, u64)> {
        if self.layer != Layer::Broker {
            return None;
        }
        let floor = self
            .cluster
            .slots
            .lock()
            .expect("slots")
            .values()
            .filter_map(|slot| slot.store.as_deref())
            .map(|store| store.retention().floor)
            .max()
            .unwrap_or(0);
        let oracle = self.cluster.oracle.lock().expect("oracle");
        messaging::first_not_received(
            &oracle.consumed,
            &oracle.committed_due(floor),
            &oracle.skipped,
        )
    }

    fn acked_count(&self) -> usize {
        let oracle = self.cluster.oracle.lock().expect("oracle");
        oracle.acked.len() + oracle.sends.len() + oracle.scheduled.len()
    }

    fn all_sends_consumable(&self) -> Result<(), Violation> {
        self.pause_disk_faults(true);
        let (sends, consumed, scheduled, skipped) = {
            let oracle = self.cluster.oracle.lock().expect("oracle");
            (
                oracle.sends.clone(),
                oracle.consumed.clone(),
                oracle.scheduled.clone(),
                oracle.skipped.clone(),
            )
        };
        {
            let oracle = self.cluster.oracle.lock().expect("oracle");
            crate::invariants::transactions_settled_once(
                &consumed,
                &oracle.committed,
                &oracle.rolled_back,
            )?;
        }
        crate::invariants::scheduled_delivered_once(&consumed, &scheduled, &skipped)?;
        let refused_full = self
            .cluster
            .oracle
            .lock()
            .expect("oracle")
            .refused_full
            .clone();
        crate::invariants::refused_not_stored(&consumed, &refused_full)?;
        let result = {
            let slots = self.cluster.slots.lock().expect("slots");
            slots.iter().try_for_each(|(id, slot)| {
                let ledger = slot.ledger.as_ref().expect("converged means running");
                let store = slot.store.as_deref().expect("converged means running");
                crate::invariants::acked_consumable(*id, ledger, store, &sends)?;
                crate::invariants::consumed_committed(*id, ledger, store, &consumed)
            })
        };
        self.pause_disk_faults(false);
        result
    }

    fn converged(&self) -> Convergence {
        let slots = self.cluster.slots.lock().expect("slots");
        let statuses: Vec<_> = slots
            .values()
            .filter_map(|s| s.ledger.as_ref().map(dledger::Ledger::status))
            .collect();
        let summary = statuses
            .iter()
            .map(|s| {
                format!(
                    "node {} {:?} term {} last {:?} committed {:?} applied {:?}",
                    s.node_id, s.role, s.term, s.last_log_index, s.committed, s.applied
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let all_up = statuses.len() as u64 == self.cluster.config.nodes;
        let leader = statuses
            .iter()
            .find(|s| s.role == Role::Leader)
            .map(|s| s.node_id);
        let agreed = all_up && leader.is_some() && statuses.iter().all(|s| s.leader == leader);
        let first = statuses
            .first()
            .map(|s| (s.last_log_index, s.committed, s.applied));
        let converged = agreed
            && statuses.iter().all(|s| {
                Some((s.last_log_index, s.committed, s.applied)) == first
                    && s.last_log_index == s.committed
                    && s.committed == s.applied
            });
        Convergence {
            leader: if agreed { leader } else { None },
            converged,
            summary,
        }
    }

    fn all_acked_readable(&self) -> Result<(), Violation> {
        let acked = self.cluster.oracle.lock().expect("oracle").acked.clone();
        let slots = self.cluster.slots.lock().expect("slots");
        for (id, slot) in slots.iter() {
            let ledger = slot.ledger.as_ref().expect("converged means running");
            for ack in &acked {
                let found = ledger.read(ack.index).ok().and_then(|e| match e.payload {
                    dledger::EntryPayload::Data(data) => id_of(&data),
                    _ => None,
                });
                if found != Some(ack.id) {
                    return Err(Violation {
                        invariant: "acked_readable",
                        detail: format!(
                            "node {id} has {found:?} at index {} where id {} was acknowledged",
                            ack.index, ack.id
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

struct Convergence {
    leader: Option<u64>,
    converged: bool,
    summary: String,
}
