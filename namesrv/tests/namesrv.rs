//! The name server over real TCP on 127.0.0.1: registration, routes, expiry, and bad input.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;
use testkit::wait::until_async;

use bytes::{BufMut, BytesMut};
use namesrv::{Namesrv, NamesrvConfig};
use protocol::body::{self, ClusterInfo, RegisterBrokerBody, TopicConfig, TopicRouteData};
use protocol::code::{SerializeType, request, response};
use protocol::header::{CommandHeader, GetRouteInfoRequestHeader, RegisterBrokerRequestHeader};
use protocol::{RemotingCommand, split_frame};
use remoting::{Connection, TcpTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn start(broker_timeout: Duration) -> Namesrv {
    Namesrv::start(
        &TcpTransport,
        NamesrvConfig {
            listen: "127.0.0.1:0".into(),
            broker_timeout,
            scan_interval: Duration::from_millis(20),
        },
    )
    .await
    .unwrap()
}

fn registration(
    name: &str,
    addr: &str,
    id: i64,
    topics: &[&str],
    timeout_ms: Option<i64>,
) -> RemotingCommand {
    let header = RegisterBrokerRequestHeader {
        broker_name: name.into(),
        broker_addr: addr.into(),
        cluster_name: "DefaultCluster".into(),
        ha_server_addr: addr.into(),
        broker_id: id,
        heartbeat_timeout_millis: timeout_ms,
        ..Default::default()
    };
    let mut body = RegisterBrokerBody::default();
    for t in topics {
        body.topic_config_serialize_wrapper
            .topic_config_table
            .insert(t.to_string(), TopicConfig::new(t, 4, 6));
    }
    RemotingCommand::request(request::REGISTER_BROKER, header.to_ext())
        .with_body(body::to_json(&body))
}

async fn route(conn: &Connection, topic: &str) -> RemotingCommand {
    let header = GetRouteInfoRequestHeader {
        topic: topic.into(),
        accept_standard_json_only: None,
    };
    conn.request(
        RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, header.to_ext()),
        TIMEOUT,
    )
    .await
    .unwrap()
}

/// How long a test waits for a condition.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn brokers_register_and_clients_get_routes() {
    let ns = start(Duration::from_secs(120)).await;
    let addr = ns.local_addr().to_string();
    let (master, _) = Connection::connect(&TcpTransport, &addr).await.unwrap();
    let (slave, _) = Connection::connect(&TcpTransport, &addr).await.unwrap();
    let answer = master
        .request(
            registration("broker-a", "127.0.0.1:10911", 0, &["T"], None),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    let answer = slave
        .request(
            registration("broker-a", "127.0.0.1:10912", 1, &["T"], None),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(answer.ext_fields["masterAddr"], "127.0.0.1:10911");

    let (client, _) = Connection::connect(&TcpTransport, &addr).await.unwrap();
    let answer = route(&client, "T").await;
    assert_eq!(answer.code, response::SUCCESS);
    let data: TopicRouteData = body::parse(&answer.body, "route").unwrap();
    assert_eq!(data.broker_datas[0].broker_addrs[&0], "127.0.0.1:10911");
    assert_eq!(data.broker_datas[0].broker_addrs[&1], "127.0.0.1:10912");
    assert!(String::from_utf8_lossy(&answer.body).contains(r#""brokerAddrs":{"0":"#));

    let missing = route(&client, "Nope").await;
    assert_eq!(missing.code, response::TOPIC_NOT_EXIST);
    assert!(missing.remark.unwrap().contains("Nope"));

    let info = client
        .request(
            RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, BTreeMap::new()),
            TIMEOUT,
        )
        .await
        .unwrap();
    let info: ClusterInfo = body::parse(&info.body, "cluster").unwrap();
    assert!(info.cluster_addr_table["DefaultCluster"].contains("broker-a"));

    // The master's connection closes: it is unregistered, the slave stays.
    drop(master);
    until_async("the master's removal", WAIT, || async {
        let answer = route(&client, "T").await;
        let data: TopicRouteData = body::parse(&answer.body, "route").unwrap();
        let addrs = data.broker_datas[0].broker_addrs.clone();
        if addrs.contains_key(&0) {
            Err(addrs)
        } else {
            Ok(())
        }
    })
    .await;
    ns.shutdown().await;
}

#[tokio::test]
async fn silent_brokers_expire() {
    let ns = start(Duration::from_secs(120)).await;
    let addr = ns.local_addr().to_string();
    let (broker, _) = Connection::connect(&TcpTransport, &addr).await.unwrap();
    let answer = broker
        .request(
            registration("broker-a", "127.0.0.1:10911", 0, &["T"], Some(200)),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(answer.code, response::SUCCESS);
    let (client, _) = Connection::connect(&TcpTransport, &addr).await.unwrap();
    assert_eq!(route(&client, "T").await.code, response::SUCCESS);
    // The connection stays open but the broker stops re-registering.
    until_async("expiry", WAIT, || async {
        let answer = route(&client, "T").await;
        if answer.code == response::TOPIC_NOT_EXIST {
            Ok(())
        } else {
            Err(answer.code)
        }
    })
    .await;
    assert!(!broker.is_closed());
    ns.shutdown().await;
}

async fn raw_roundtrip(stream: &mut TcpStream, bytes: &[u8]) -> Option<RemotingCommand> {
    stream.write_all(bytes).await.unwrap();
    let mut buf = BytesMut::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(frame) = split_frame(&mut buf).unwrap() {
            return Some(RemotingCommand::decode(&frame).unwrap());
        }
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf))
            .await
            .unwrap();
        if read.unwrap() == 0 {
            return None;
        }
    }
}

fn json_frame(header: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u32(4 + header.len() as u32);
    out.put_u32(header.len() as u32);
    out.put_slice(header);
    out.to_vec()
}

#[tokio::test]
async fn bad_input_gets_an_answer_and_the_server_keeps_serving() {
    let ns = start(Duration::from_secs(120)).await;
    let addr = ns.local_addr().to_string();
    let mut stream = TcpStream::connect(&addr).await.unwrap();

    // A header that is not a command: answered with SYSTEM_ERROR, same connection goes on.
    let answer = raw_roundtrip(&mut stream, &json_frame(br#"{"opaque":77,"flag":0}"#))
        .await
        .unwrap();
    assert_eq!((answer.code, answer.opaque), (response::SYSTEM_ERROR, 77));
    assert!(answer.remark.unwrap().contains("code"));

    // An unknown request code.
    let answer = raw_roundtrip(
        &mut stream,
        &json_frame(br#"{"code":9999,"opaque":78,"flag":0}"#),
    )
    .await
    .unwrap();
    assert_eq!(answer.code, response::REQUEST_CODE_NOT_SUPPORTED);
    assert_eq!(
        answer.remark.as_deref(),
        Some(" request type 9999 not supported")
    );

    // A route request without its topic.
    let answer = raw_roundtrip(
        &mut stream,
        &json_frame(br#"{"code":105,"opaque":79,"flag":0,"extFields":{}}"#),
    )
    .await
    .unwrap();
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert!(answer.remark.unwrap().contains("topic"), "names the field");

    // A registration whose body does not match its CRC, and one whose body is not JSON.
    let mut bad_crc = registration("b", "h:1", 0, &["T"], None);
    bad_crc
        .ext_fields
        .insert("bodyCrc32".into(), "12345".into());
    let answer = raw_roundtrip(&mut stream, &bad_crc.to_bytes().unwrap())
        .await
        .unwrap();
    assert!(answer.remark.unwrap().contains("crc32 not match"));
    let garbage = registration("b", "h:1", 0, &[], None).with_body(&b"{not json"[..]);
    let answer = raw_roundtrip(&mut stream, &garbage.to_bytes().unwrap())
        .await
        .unwrap();
    assert!(
        answer
            .remark
            .unwrap()
            .contains("malformed register broker body")
    );

    // A binary-header request is answered in binary.
    let mut binary = RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, BTreeMap::new());
    binary.serialize = SerializeType::RocketMq;
    binary.opaque = 80;
    let answer = raw_roundtrip(&mut stream, &binary.to_bytes().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (answer.serialize, answer.opaque, answer.code),
        (SerializeType::RocketMq, 80, 0)
    );

    // An oversized length prefix closes that connection only.
    let closed = raw_roundtrip(&mut stream, &[0x7f, 0, 0, 0, 1, 2, 3]).await;
    assert!(closed.is_none(), "connection closed");
    let (client, _) = Connection::connect(&TcpTransport, &addr).await.unwrap();
    assert_eq!(
        route(&client, "T").await.code,
        response::TOPIC_NOT_EXIST,
        "still serving"
    );
    ns.shutdown().await;
}
