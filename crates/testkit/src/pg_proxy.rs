//! A TCP proxy in front of PostgreSQL that a test can cut (every connection dropped, new ones refused) and
//! restore, or whose answers it can hold back: a real outage or a slow server as a client behind it sees it,
//! without touching the shared server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Connections relayed to the server right now.
    live: Arc<AtomicU64>,
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
        let live = Arc::new(AtomicU64::new(0));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let accept = {
            let (up, slow, live, connections) =
                (up.clone(), slow.clone(), live.clone(), connections.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let (target, slow, live) = (target.clone(), slow.clone(), live.clone());
                    let task = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(&target).await {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let _counted = Live::count(live);
                            relay(client, server, &slow).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            })
        };
        PgProxy {
            addr,
            up,
            slow,
            live,
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
        let dropped = self.live.load(Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
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

/// One relayed connection in [`PgProxy`]'s count while it lives (also when its task is aborted by a cut).
struct Live(Arc<AtomicU64>);

impl Live {
    fn count(live: Arc<AtomicU64>) -> Live {
        live.fetch_add(1, Ordering::SeqCst);
        Live(live)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
