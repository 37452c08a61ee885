//! A TCP proxy in front of PostgreSQL that a test can cut (every connection dropped, new ones refused) and
//! restore, or whose answers it can hold back: a real outage or a slow server as a client behind it sees it,
//! without touching the shared server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long the server's answers are held back while [`PgProxy::slow_answers`] is on.
pub const SLOW_ANSWER: Duration = Duration::from_millis(200);

pub struct PgProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    /// The relays of the connections still open (finished ones are dropped as new ones come).
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl PgProxy {
    /// A proxy in front of the server of `target_url` (`postgres://…@host:port/…`).
    pub async fn start(target_url: &str) -> PgProxy {
        let target = host_port(target_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let slow = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let accept = {
            let (up, slow, connections) = (up.clone(), slow.clone(), connections.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let (target, slow) = (target.clone(), slow.clone());
                    let task = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(&target).await {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            relay(client, server, &slow).await;
                        }
                    });
                    let mut connections = connections.lock().unwrap();
                    connections.retain(|t| !t.is_finished());
                    connections.push(task);
                }
            })
        };
        PgProxy {
            addr,
            up,
            slow,
            connections,
            accept,
        }
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        url.replacen(&host_port(url), &self.addr.to_string(), 1)
    }

    /// Drops every connection and refuses new ones until [`PgProxy::restore`]; returns how many were live.
    pub fn cut(&self) -> u64 {
        self.up.store(false, Ordering::SeqCst);
        let mut dropped = 0;
        for task in self.connections.lock().unwrap().drain(..) {
            dropped += u64::from(!task.is_finished());
            task.abort();
        }
        dropped
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// While on, every answer of the server reaches the client [`SLOW_ANSWER`] late.
    pub fn slow_answers(&self, on: bool) {
        self.slow.store(on, Ordering::SeqCst);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Copies both ways until either side closes; the server's answers wait [`SLOW_ANSWER`] while `slow` is on.
async fn relay(client: TcpStream, server: TcpStream, slow: &AtomicBool) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::io::copy(&mut client_read, &mut server_write);
    let answers = async {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if slow.load(Ordering::SeqCst) {
                tokio::time::sleep(SLOW_ANSWER).await;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = answers => {}
    }
}

/// `host:port` of a `postgres://` URL.
fn host_port(url: &str) -> String {
    let after_at = &url[url
        .rfind('@')
        .map(|i| i + 1)
        .unwrap_or_else(|| url.find("://").unwrap() + 3)..];
    after_at.split(['/', '?']).next().unwrap().to_string()
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    #[tokio::test]
    async fn a_cut_drops_the_open_connections_refuses_new_ones_and_counts_them() {
        let db = crate::fresh_database().await;
        let proxy = PgProxy::start(&db.url).await;
        let url = proxy.url(&db.url);
        let mut first = sqlx::PgConnection::connect(&url).await.unwrap();
        let second = sqlx::PgConnection::connect(&url).await.unwrap();
        second.close().await.unwrap();
        // The second one's relay ends when it closes.
        for _ in 0..500 {
            if proxy
                .connections
                .lock()
                .unwrap()
                .iter()
                .filter(|t| !t.is_finished())
                .count()
                == 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(proxy.cut(), 1, "one connection was open");
        assert!(sqlx::query("SELECT 1").execute(&mut first).await.is_err());
        assert!(sqlx::PgConnection::connect(&url).await.is_err(), "refused");
        proxy.restore();
        sqlx::PgConnection::connect(&url)
            .await
            .expect("accepted again");
    }
}
