//! Server and client over real TCP on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::RemotingCommand;
use protocol::code::response;
use remoting::{ClientError, Connection, Handler, Peer, Server, TcpTransport};
use tokio::sync::Notify;

/// Code 1 waits until released; code 2 answers at once; code 3 pushes a request back to the
/// client; code 4 never answers.
struct Test {
    release: Notify,
}

impl Handler for Test {
    async fn handle(&self, peer: &Arc<Peer>, request: RemotingCommand) -> Option<RemotingCommand> {
        match request.code {
            1 => {
                self.release.notified().await;
                Some(RemotingCommand::response_to(&request, response::SUCCESS).with_remark("slow"))
            }
            3 => {
                assert!(peer.send_oneway(RemotingCommand::request(40, BTreeMap::new())));
                Some(RemotingCommand::response_to(&request, response::SUCCESS))
            }
            4 => None,
            _ => {
                Some(RemotingCommand::response_to(&request, response::SUCCESS).with_remark("fast"))
            }
        }
    }
}

async fn start() -> (Server, Arc<Test>) {
    let handler = Arc::new(Test {
        release: Notify::new(),
    });
    let server = Server::start(&TcpTransport, "127.0.0.1:0", handler.clone())
        .await
        .unwrap();
    (server, handler)
}

/// A held request does not block a later one on the same connection; answers come back
/// matched to their requests whatever the order.
#[tokio::test]
async fn requests_on_one_connection_run_concurrently() {
    let (server, handler) = start().await;
    let (conn, _) = Connection::connect(&TcpTransport, &server.local_addr().to_string())
        .await
        .unwrap();
    let conn = Arc::new(conn);
    let slow = tokio::spawn({
        let conn = conn.clone();
        async move {
            conn.request(
                RemotingCommand::request(1, BTreeMap::new()),
                Duration::from_secs(10),
            )
            .await
        }
    });
    let fast = conn
        .request(
            RemotingCommand::request(2, BTreeMap::new()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(fast.remark.as_deref(), Some("fast"));
    assert!(!slow.is_finished());
    handler.release.notify_one();
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.remark.as_deref(), Some("slow"));
    server.shutdown().await;
}

/// A request nobody answers times out with an error naming the code; a server-initiated
/// request reaches the client.
#[tokio::test]
async fn timeouts_and_server_requests() {
    let (server, _) = start().await;
    let (conn, mut inbound) = Connection::connect(&TcpTransport, &server.local_addr().to_string())
        .await
        .unwrap();
    let err = conn
        .request(
            RemotingCommand::request(4, BTreeMap::new()),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { code: 4, .. }), "{err}");
    conn.request(
        RemotingCommand::request(3, BTreeMap::new()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(10), inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pushed.code, 40);
    assert!(pushed.is_oneway());
    // After the server is gone, requests fail as closed instead of hanging.
    server.shutdown().await;
    testkit::wait::until(
        "the client to see the close",
        Duration::from_secs(10),
        || conn.is_closed(),
    )
    .await;
    let err = conn
        .request(
            RemotingCommand::request(2, BTreeMap::new()),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err}");
}

/// Connecting to a port nobody listens on is a clear error.
#[tokio::test]
async fn refused_connection_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = Connection::connect(&TcpTransport, &addr)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains(&addr), "{err}");
}
