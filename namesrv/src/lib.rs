//! raftmq's name server: brokers register with it, clients ask it for topic routes
//! (DESIGN.md §7, PROTOCOL.md §3.1). Instances share nothing; each broker registers with all.
//!
//! - [`registry`]: the state, pure and time-driven.
//! - [`Namesrv`]: the server: request processing, expiry of silent brokers, removal of brokers
//!   whose connection closed.

pub mod registry;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::RemotingCommand;
use protocol::body::{self, KvTable, RegisterBrokerBody, TopicList};
use protocol::code::{request, response};
use protocol::header::{
    CommandHeader, GetRouteInfoRequestHeader, RegisterBrokerRequestHeader,
    RegisterBrokerResponseHeader, UnRegisterBrokerRequestHeader,
};
use remoting::{Handler, Peer, Server, Transport};
use tokio::time::Instant;

pub use registry::{LiveBroker, Registered, Registry};

/// Settings of a name server.
#[derive(Debug, Clone)]
pub struct NamesrvConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// A broker silent this long is dropped (RocketMQ: 120 s).
    pub broker_timeout: Duration,
    /// How often silent brokers are looked for (RocketMQ: 5 s).
    pub scan_interval: Duration,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        NamesrvConfig {
            listen: "127.0.0.1:9876".into(),
            broker_timeout: Duration::from_secs(120),
            scan_interval: Duration::from_secs(5),
        }
    }
}

struct Processor {
    registry: Arc<Mutex<Registry>>,
}

fn error(request: &RemotingCommand, code: i32, remark: impl Into<String>) -> RemotingCommand {
    RemotingCommand::response_to(request, code).with_remark(remark)
}

impl Processor {
    fn process(&self, peer: &Peer, req: &RemotingCommand) -> RemotingCommand {
        match req.code {
            request::REGISTER_BROKER => self.register(peer, req),
            request::UNREGISTER_BROKER => {
                match UnRegisterBrokerRequestHeader::from_ext(&req.ext_fields) {
                    Ok(h) => {
                        self.registry
                            .lock()
                            .expect("registry")
                            .unregister(&h.broker_name, &h.broker_addr);
                        RemotingCommand::response_to(req, response::SUCCESS)
                    }
                    Err(err) => error(req, response::SYSTEM_ERROR, err.to_string()),
                }
            }
            request::BROKER_HEARTBEAT => RemotingCommand::response_to(req, response::SUCCESS),
            request::GET_ROUTEINFO_BY_TOPIC => {
                match GetRouteInfoRequestHeader::from_ext(&req.ext_fields) {
                    Ok(h) => match self.registry.lock().expect("registry").route(&h.topic) {
                        Some(route) => RemotingCommand::response_to(req, response::SUCCESS)
                            .with_body(body::to_json(&route)),
                        None => error(
                            req,
                            response::TOPIC_NOT_EXIST,
                            format!(
                                "No topic route info in name server for the topic: {}",
                                h.topic
                            ),
                        ),
                    },
                    Err(err) => error(req, response::SYSTEM_ERROR, err.to_string()),
                }
            }
            request::GET_BROKER_CLUSTER_INFO => {
                let info = self.registry.lock().expect("registry").cluster_info();
                RemotingCommand::response_to(req, response::SUCCESS).with_body(body::to_json(&info))
            }
            request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
                let topics = TopicList {
                    topic_list: self.registry.lock().expect("registry").topics(),
                };
                RemotingCommand::response_to(req, response::SUCCESS)
                    .with_body(body::to_json(&topics))
            }
            code => error(
                req,
                response::REQUEST_CODE_NOT_SUPPORTED,
                format!(" request type {code} not supported"),
            ),
        }
    }

    fn register(&self, peer: &Peer, req: &RemotingCommand) -> RemotingCommand {
        let header = match RegisterBrokerRequestHeader::from_ext(&req.ext_fields) {
            Ok(h) => h,
            Err(err) => return error(req, response::SYSTEM_ERROR, err.to_string()),
        };
        if let Some(crc) = header.body_crc32.filter(|c| *c != 0) {
            let actual = (crc32fast::hash(&req.body) & 0x7FFF_FFFF) as i32;
            if actual != crc {
                return error(
                    req,
                    response::SYSTEM_ERROR,
                    format!("crc32 not match: header {crc}, body {actual}"),
                );
            }
        }
        if header.compressed == Some(true) {
            return error(
                req,
                response::SYSTEM_ERROR,
                "compressed registration bodies are not supported; register uncompressed",
            );
        }
        let body: RegisterBrokerBody = if req.body.is_empty() {
            RegisterBrokerBody::default()
        } else {
            match body::parse(&req.body, "register broker") {
                Ok(b) => b,
                Err(err) => return error(req, response::SYSTEM_ERROR, err.to_string()),
            }
        };
        let outcome = self.registry.lock().expect("registry").register(
            &header,
            &body,
            Instant::now(),
            peer.id,
        );
        match outcome {
            Registered::Accepted { master_addr } => {
                let answer = RegisterBrokerResponseHeader {
                    ha_server_addr: master_addr.clone(),
                    master_addr,
                };
                RemotingCommand::response_to(req, response::SUCCESS)
                    .with_ext(answer.to_ext())
                    .with_body(body::to_json(&KvTable::default()))
            }
            Registered::Stale { holder } => {
                tracing::warn!(addr = %header.broker_addr, %holder, "stale registration ignored");
                error(
                    req,
                    response::SYSTEM_ERROR,
                    format!(
                        "register broker failed: id {} of {} is held by {holder} with a newer state version",
                        header.broker_id, header.broker_name
                    ),
                )
            }
        }
    }
}

impl Handler for Processor {
    async fn handle(&self, peer: &Arc<Peer>, request: RemotingCommand) -> Option<RemotingCommand> {
        Some(self.process(peer, &request))
    }

    fn closed(&self, peer: &Peer) {
        self.registry
            .lock()
            .expect("registry")
            .connection_closed(peer.id);
    }
}

/// A running name server.
pub struct Namesrv {
    server: Server,
    registry: Arc<Mutex<Registry>>,
    scanner: tokio::task::JoinHandle<()>,
}

impl Namesrv {
    /// Binds and serves.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start<T: Transport>(
        transport: &T,
        config: NamesrvConfig,
    ) -> std::io::Result<Namesrv> {
        let registry = Arc::new(Mutex::new(Registry::new(config.broker_timeout)));
        let processor = Arc::new(Processor {
            registry: registry.clone(),
        });
        let server = Server::start(transport, &config.listen, processor).await?;
        let scanner = tokio::spawn({
            let registry = registry.clone();
            async move {
                let mut tick = tokio::time::interval(config.scan_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    registry.lock().expect("registry").expire(Instant::now());
                }
            }
        });
        tracing::info!(addr = %server.local_addr(), "namesrv serving");
        Ok(Namesrv {
            server,
            registry,
            scanner,
        })
    }

    /// The address clients dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The registry, for status pages.
    pub fn registry(&self) -> Arc<Mutex<Registry>> {
        self.registry.clone()
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        self.scanner.abort();
        self.server.shutdown().await;
    }
}
