//! raftmq's Rust RocketMQ client: a producer, a pull consumer and a push consumer speaking
//! RocketMQ's remoting protocol (../shared/PROTOCOL.md) to any RocketMQ name server and
//! broker, raftmq's or Apache's.
//!
//! # Layout
//!
//! - [`config`]: one settings struct per component, with Java's defaults.
//! - [`error`]: [`ClientError`], [`ConfigError`].
//! - [`message`]: [`Message`] to send; [`SendResult`] and [`PullResult`] back.
//! - [`producer`]: [`Producer`]: sync, async, oneway, batch and ordered sends with retries.
//! - [`pull`]: [`PullConsumer`]: pull by queue and offset; offsets by hand.
//! - [`push`]: [`PushConsumer`]: rebalanced long-polling consumption into a
//!   [`MessageListener`], clustering or broadcasting.
//! - [`rebalance`]: queue allocation among a group's members.
//! - [`transaction`]: transactional sends ([`Producer::send_in_transaction`]) and the checker
//!   that answers the brokers' checks.
//! - [`clock`]: the wall-clock seam; [`limits`]: every bound, with its reason.
//! - Private: `instance` (connections, route cache and refresh, heartbeats, requests from
//!   brokers; Java's `MQClientInstance`), `api` (typed broker requests), `route` (what a
//!   route means for publishing and subscribing).
//!
//! Every client is generic over [`remoting::Transport`], so the simulation runs it over
//! turmoil; [`remoting::TcpTransport`] is the default. Wall time comes from
//! [`clock::Clock`], intervals from `tokio::time`, and nothing iterates a `HashMap`.
//!
//! ```no_run
//! # async fn example() -> Result<(), client::ClientError> {
//! use client::{ClientConfig, Message, Producer, ProducerConfig};
//! use remoting::TcpTransport;
//!
//! let producer = Producer::start(
//!     TcpTransport,
//!     ClientConfig::new(["127.0.0.1:9876"]),
//!     ProducerConfig::new("my-producers"),
//! )
//! .await?;
//! let sent = producer.send(Message::new("TopicTest", "hello").with_tags("TagA")).await?;
//! println!("{} at {}:{}", sent.msg_id, sent.queue.queue_id, sent.queue_offset);
//! producer.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod api;
pub mod config;
pub mod error;
mod instance;
pub mod limits;
pub mod message;
pub mod producer;
pub mod pull;
pub mod push;
pub mod rebalance;
mod route;
pub mod transaction;

pub use api::BoundaryType;
pub use config::{
    ClientConfig, ConsumeFromWhere, MessageModel, MessageSelector, ProducerConfig,
    PullConsumerConfig, PushConsumerConfig,
};
pub use error::{ClientError, ConfigError};
pub use message::{Message, PullResult, PullStatus, SendResult, SendStatus};
pub use producer::{Producer, SendHandle};
pub use protocol::body::MessageQueue;
pub use protocol::message::StoredMessage;
pub use pull::PullConsumer;
pub use push::{ConsumeStatus, FnListener, MessageListener, PushConsumer, listener_fn};
pub use transaction::{LocalTransactionState, TransactionChecker, TransactionSendResult};
