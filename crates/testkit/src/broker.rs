//! A Kafka broker of a test's own, for tests that stop the broker (outages) without disturbing the shared one.
//!
//! It runs the same cached jars as `make up` (a single KRaft node, RF 1) with its own ports and data directory
//! under `.dev/tmp/`. [`DedicatedBroker::stop`] shuts it down like an outage would, [`DedicatedBroker::restart`]
//! brings it back with the same data and address, and dropping it kills the process and deletes the data.
//! Start-up takes a few seconds and ~300 MB; use it only where the shared broker cannot serve.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{check_kafka, workspace_root};

pub struct DedicatedBroker {
    dir: PathBuf,
    port: u16,
    process: Option<Child>,
}

fn kafka_libs() -> PathBuf {
    let cache = workspace_root().join(".dev/cache");
    let found = std::fs::read_dir(&cache).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("libs"))
            .filter(|libs| libs.join(".complete").exists())
            .max()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no Kafka jars under {}: run `make up` first",
            cache.display()
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

impl DedicatedBroker {
    /// Formats a fresh single-node cluster and starts it; returns once it answers metadata requests.
    pub fn start() -> Self {
        let dir = workspace_root()
            .join(".dev/tmp")
            .join(crate::unique_name("broker"));
        std::fs::create_dir_all(dir.join("data")).expect("broker directory");
        let (port, controller) = (free_port(), free_port());
        let props = format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\ncontroller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\nlog.dirs={data}\n\
             default.replication.factor=1\nmin.insync.replicas=1\nauto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\noffsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=3\nshare.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n\
             num.network.threads=2\nnum.io.threads=2\n",
            data = dir.join("data").display()
        );
        std::fs::write(dir.join("server.properties"), props).unwrap();
        let status = java(&dir)
            .args(["kafka.tools.StorageTool", "format", "-c"])
            .arg(dir.join("server.properties"))
            .args(["-t", "dGVzdC1icm9rZXItMDAwMQ"])
            .stdout(Stdio::null())
            .status()
            .expect("run the Kafka storage tool");
        assert!(
            status.success(),
            "formatting the dedicated broker's storage failed"
        );
        let mut broker = Self {
            dir,
            port,
            process: None,
        };
        broker.launch();
        broker
    }

    /// `127.0.0.1:<port>`
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        let child = java(&self.dir)
            .args(["-Xms64m", "-Xmx256m", "kafka.Kafka"])
            .arg(self.dir.join("server.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the dedicated broker");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while check_kafka(&self.bootstrap_servers(), Duration::from_secs(2)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dedicated broker did not start; see {}",
                self.dir.join("broker.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the broker (SIGKILL: an abrupt outage) and waits until the process is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped broker again with the same data and address.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "restart() needs a stopped broker");
        self.launch();
    }
}

fn java(dir: &Path) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{}/*", kafka_libs().display()))
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            workspace_root()
                .join("deploy/local/kafka/log4j2-tools.properties")
                .display()
        ))
        .current_dir(dir);
    cmd
}

impl Drop for DedicatedBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
