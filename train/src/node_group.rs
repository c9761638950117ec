//! Training on several machines (*nodes*): every node trains on its own part of each global
//! batch, and after each backward pass the gradients are summed across the nodes through Burn's
//! collective (`burn-collective`: an orchestrator that the nodes register with over WebSockets,
//! gradient slices exchanged peer to peer), so that every node's optimiser takes the step one
//! machine would take on the whole batch, and the weights stay equal everywhere.
//!
//! Burn's collective calls cannot be cancelled: a node whose peer died would wait forever inside
//! one. So every call runs under a watchdog: when the group does not answer within
//! [`NodeGroup::timeout_secs`], the node logs one line (which peers still answer, and the last
//! checkpoint to `--resume` from) and the process exits with [`LOST_PEER_EXIT_CODE`].

use burn::config::Config;

/// The exit code of a node that gave up on its group.
pub const LOST_PEER_EXIT_CODE: i32 = 3;

/// Where this process stands in a group of training nodes.
#[derive(Config, Debug, PartialEq)]
pub struct NodeGroup {
    /// Nodes in the group.
    pub nodes: u32,
    /// This node, 0-based.
    pub rank: u32,
    /// The orchestrator's `host:port`, the same on every node.
    pub orchestrator: String,
    /// Rank 0 starts the orchestrator itself, on the orchestrator's port (off: it runs
    /// elsewhere).
    #[config(default = true)]
    pub start_orchestrator: bool,
    /// This node's address as the other nodes reach it.
    #[config(default = "\"127.0.0.1\".to_string()")]
    pub host: String,
    /// The port of this node's tensor data service: the other nodes download gradient slices
    /// from it.
    pub data_port: u16,
    /// Seconds one all-reduce (or joining the group) may wait on the others before this node
    /// gives up.
    #[config(default = 120.0)]
    pub timeout_secs: f64,
}

impl NodeGroup {
    /// A node count, rank, address or timeout that cannot work, in one line.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes < 2 {
            return Err(format!(
                "--nodes {}: a group needs at least two nodes (one node trains without --nodes)",
                self.nodes
            ));
        }
        if self.rank >= self.nodes {
            return Err(format!(
                "--node-rank {} does not fit --nodes {}: ranks are 0 to {}",
                self.rank,
                self.nodes,
                self.nodes - 1
            ));
        }
        self.orchestrator_address()?;
        if self.data_port == 0 {
            return Err("the data service port must not be 0".into());
        }
        if !(self.timeout_secs.is_finite() && self.timeout_secs > 0.0) {
            return Err(format!(
                "--peer-timeout {}: must be a positive number of seconds",
                self.timeout_secs
            ));
        }
        Ok(())
    }

    /// The leader: rank 0.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// The orchestrator's host and port.
    pub fn orchestrator_address(&self) -> Result<(&str, u16), String> {
        self.orchestrator
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .filter(|&(_, p)| p != 0)
            .ok_or_else(|| {
                format!(
                    "--orchestrator '{}': expected HOST:PORT, e.g. 10.0.0.1:4710",
                    self.orchestrator
                )
            })
    }

    /// The data service port a node takes unless told: the orchestrator's port + 1 + rank, so
    /// that nodes on one machine do not collide.
    pub fn default_data_port(&self) -> Result<u16, String> {
        let (_, port) = self.orchestrator_address()?;
        u16::try_from(u32::from(port) + 1 + self.rank).map_err(|_| {
            format!(
                "--orchestrator port {port} + 1 + rank {} is past 65535: give --data-port",
                self.rank
            )
        })
    }
}

pub use sync::GradientSync;

#[cfg(not(feature = "multi-node"))]
mod sync {
    use burn::optim::GradientsParams;
    use burn::prelude::Backend;

    use super::NodeGroup;

    /// Sums gradients across a [`NodeGroup`]; this build has no multi-node support (feature
    /// `multi-node`), so it is always the single-node no-op.
    #[derive(Clone, Debug, Default)]
    pub struct GradientSync;

    impl GradientSync {
        /// One process, nothing to sum.
        pub fn none() -> Self {
            Self
        }

        /// Always an error: the feature is off.
        pub fn join<B: Backend>(_group: &NodeGroup, _device: &B::Device) -> Result<Self, String> {
            Err(
                "this build has no multi-node training: build dmpo-train with its `multi-node` \
                 feature (the command line has it)"
                    .into(),
            )
        }

        pub fn all_reduce<B: Backend>(&self, grads: GradientsParams) -> GradientsParams {
            grads
        }

        pub fn agree_on_resume<B: Backend>(
            &self,
            local: Option<usize>,
            _epochs: usize,
            _device: &B::Device,
        ) -> Option<usize> {
            local
        }

        pub fn set_checkpoints(&self, _dir: std::path::PathBuf) {}
    }
}

#[cfg(feature = "multi-node")]
mod sync {
    use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use burn::optim::GradientsParams;
    use burn::prelude::*;
    use burn::tensor::TensorPrimitive;
    use burn_collective::{
        AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation, all_reduce, register,
    };

    use super::{LOST_PEER_EXIT_CODE, NodeGroup};

    /// This process's one peer in Burn's collective (one device per node: several local devices
    /// are summed by Burn's multi-device strategy before the group's all-reduce).
    const PEER: usize = 0;

    /// Sums gradients across a [`NodeGroup`] through Burn's collective, every call under a
    /// watchdog; `none()` (one process) leaves them as they are.
    #[derive(Clone, Debug, Default)]
    pub struct GradientSync {
        joined: Option<Arc<Joined>>,
    }

    #[derive(Debug)]
    struct Joined {
        group: NodeGroup,
        /// Every node's data service address, by rank (learned when joining).
        peers: Mutex<Vec<Option<SocketAddr>>>,
        /// When the call in progress must have returned; `None` between calls.
        deadline: Mutex<Option<(Instant, &'static str)>>,
        checkpoints: Mutex<Option<PathBuf>>,
    }

    impl GradientSync {
        /// One process, nothing to sum.
        pub fn none() -> Self {
            Self::default()
        }

        /// Joins the group: rank 0 starts the orchestrator (when asked to), every node registers
        /// with it and waits for the others, then the nodes exchange their addresses (one
        /// all-reduce), so that a lost peer can be named later. Refuses a busy port or an
        /// orchestrator that cannot be reached, in one line; a node that never joins makes the
        /// others give up after the timeout.
        pub fn join<B: Backend>(group: &NodeGroup, device: &B::Device) -> Result<Self, String> {
            group.validate()?;
            let timeout = Duration::from_secs_f64(group.timeout_secs);
            let (orchestrator_host, port) = group.orchestrator_address()?;
            if group.is_leader() && group.start_orchestrator {
                free_port(port, "the orchestrator")?;
                start_orchestrator(port)?;
            }
            free_port(group.data_port, "this node's data service")?;
            reach_orchestrator(&group.orchestrator, timeout)?;

            let ws = |host: &str, port: u16| {
                format!("ws://{host}:{port}")
                    .parse()
                    .expect("an address parses")
            };
            let config = CollectiveConfig::default()
                .with_num_devices(1)
                .with_num_nodes(group.nodes)
                .with_global_address(ws(orchestrator_host, port))
                .with_node_address(ws(&group.host, group.data_port))
                .with_data_service_port(group.data_port)
                // A tree, not the default ring: the ring cannot reduce a tensor with fewer
                // elements than there are nodes (a scalar parameter's gradient).
                .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2));
            let joined = Arc::new(Joined {
                group: group.clone(),
                peers: Mutex::new(vec![None; group.nodes as usize]),
                deadline: Mutex::new(None),
                checkpoints: Mutex::new(None),
            });
            spawn_watchdog(&joined);
            let sync = Self {
                joined: Some(joined),
            };
            tracing::info!(
                "node {} of {}: joining the group at {} (data service on {}:{})",
                group.rank,
                group.nodes,
                group.orchestrator,
                group.host,
                group.data_port
            );
            // Refused at once (this process has joined a group before): an error to return.
            // No answer: the watchdog ends the process.
            sync.within_deadline(
                "joining the group (waiting for every node to register)",
                || register::<B>(PeerId::from(PEER), device.clone(), config),
            )
            .map_err(|e| {
                format!(
                    "cannot join the node group: {e:?} (a process joins one group, once: \
                     train again in a new process)"
                )
            })?;
            sync.exchange_addresses::<B>(device);
            tracing::info!("node {}: all {} nodes joined", group.rank, group.nodes);
            Ok(sync)
        }

        /// Sums `grads` across the group (the trainee's loss is scaled by each node's share
        /// of the global batch, so the sum is the global batch's gradient).
        pub fn all_reduce<B: Backend>(&self, grads: GradientsParams) -> GradientsParams {
            if self.joined.is_none() {
                return grads;
            }
            self.guarded("summing the gradients", || {
                grads
                    .all_reduce::<B>(PeerId::from(PEER), ReduceOperation::Sum)
                    .map_err(|e| format!("{e:?}"))
            })
        }

        /// The epoch every node can resume after: the newest checkpoint all of them have
        /// (`local` is this node's newest; older ones may be gone, so a node whose newest is
        /// not the group's starts over rather than guess). One process: `local`.
        pub fn agree_on_resume<B: Backend>(
            &self,
            local: Option<usize>,
            epochs: usize,
            device: &B::Device,
        ) -> Option<usize> {
            let Some(joined) = &self.joined else {
                return local;
            };
            // One slot per epoch (0 = none): every node adds 1 at its newest checkpoint.
            let mut mine = vec![0.0f32; epochs + 1];
            mine[local.unwrap_or(0).min(epochs)] = 1.0;
            let summed = self.sum::<B>(mine, device, "agreeing on the epoch to resume after");
            let nodes = joined.group.nodes as f32;
            let agreed = summed.iter().position(|&n| n == nodes);
            match agreed {
                Some(0) => None,
                Some(e) => Some(e),
                None => {
                    let newest: Vec<String> = summed
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0.0)
                        .map(|(e, n)| format!("epoch {e} on {n} node(s)"))
                        .collect();
                    give_up(&format!(
                        "the nodes' newest checkpoints differ ({}): copy the newest one to every \
                         node's checkpoint folder, or start over without --resume",
                        newest.join(", ")
                    ))
                }
            }
        }

        /// Where this node's checkpoints are, to name them when giving up.
        pub fn set_checkpoints(&self, dir: PathBuf) {
            if let Some(j) = &self.joined {
                *j.checkpoints.lock().expect("lock") = Some(dir);
            }
        }

        /// Every node's data service address, each node filling its own row of a summed table.
        fn exchange_addresses<B: Backend>(&self, device: &B::Device) {
            let joined = self.joined.as_ref().expect("joined");
            let group = &joined.group;
            let mut table = vec![0.0f32; group.nodes as usize * 5];
            let me = (group.host.as_str(), group.data_port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.find(SocketAddr::is_ipv4));
            if let Some(SocketAddr::V4(addr)) = me {
                let row = group.rank as usize * 5;
                for (i, octet) in addr.ip().octets().iter().enumerate() {
                    table[row + i] = f32::from(*octet);
                }
                table[row + 4] = f32::from(addr.port());
            }
            let summed = self.sum::<B>(table, device, "exchanging the nodes' addresses");
            let mut peers = joined.peers.lock().expect("lock");
            for (rank, row) in summed.chunks(5).enumerate() {
                if row[4] > 0.0 {
                    let ip = std::net::Ipv4Addr::new(
                        row[0] as u8,
                        row[1] as u8,
                        row[2] as u8,
                        row[3] as u8,
                    );
                    peers[rank] = Some(SocketAddr::from((ip, row[4] as u16)));
                }
            }
        }

        fn sum<B: Backend>(
            &self,
            values: Vec<f32>,
            device: &B::Device,
            what: &'static str,
        ) -> Vec<f32> {
            let n = values.len();
            let tensor = Tensor::<B, 1>::from_data(TensorData::new(values, [n]), device);
            let summed = self.guarded(what, || {
                all_reduce::<B>(
                    PeerId::from(PEER),
                    tensor.into_primitive().tensor(),
                    ReduceOperation::Sum,
                )
                .map_err(|e| format!("{e:?}"))
            });
            Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed))
                .into_data()
                .to_vec::<f32>()
                .expect("f32 data")
        }

        /// Runs one collective call under the watchdog; an error from it ends the process too
        /// (the group cannot go on without this node's part).
        fn guarded<T>(&self, what: &'static str, call: impl FnOnce() -> Result<T, String>) -> T {
            let joined = self.joined.as_ref().expect("joined");
            self.within_deadline(what, call)
                .unwrap_or_else(|e| give_up(&format!("{what} failed: {e}. {}", status(joined))))
        }

        /// Runs `call` with the watchdog armed for it.
        fn within_deadline<T, E>(
            &self,
            what: &'static str,
            call: impl FnOnce() -> Result<T, E>,
        ) -> Result<T, E> {
            let joined = self.joined.as_ref().expect("joined");
            let timeout = Duration::from_secs_f64(joined.group.timeout_secs);
            *joined.deadline.lock().expect("lock") = Some((Instant::now() + timeout, what));
            let out = call();
            *joined.deadline.lock().expect("lock") = None;
            out
        }
    }

    /// Checks the deadline of the call in progress once a second; past it, gives up.
    fn spawn_watchdog(joined: &Arc<Joined>) {
        let joined = Arc::downgrade(joined);
        std::thread::Builder::new()
            .name("node-group-watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(joined) = joined.upgrade() else {
                        return;
                    };
                    let late = *joined.deadline.lock().expect("lock");
                    if let Some((deadline, what)) = late
                        && Instant::now() > deadline
                    {
                        give_up(&format!(
                            "no answer from the group within {} s while {what}. {}",
                            joined.group.timeout_secs,
                            status(&joined)
                        ));
                    }
                }
            })
            .expect("spawning the watchdog thread");
    }

    /// Which peers still accept connections, and what is left to resume from.
    fn status(joined: &Joined) -> String {
        let peers = joined
            .peers
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        // A dying peer's connections close one by one: its data service may still accept for
        // a moment after the exchange with it broke, so look three times.
        let (mut lost, mut alive) = (Vec::new(), Vec::new());
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            (lost, alive) = (Vec::new(), Vec::new());
            for (rank, addr) in peers.iter().enumerate() {
                if rank == joined.group.rank as usize {
                    continue;
                }
                match addr {
                    Some(a) if TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok() => {
                        alive.push(format!("node {rank} ({a})"))
                    }
                    Some(a) => lost.push(format!("node {rank} ({a}, not answering)")),
                    None => lost.push(format!("node {rank} (never joined)")),
                }
            }
            if !lost.is_empty() {
                break;
            }
        }
        let who = if lost.is_empty() {
            format!(
                "No peer lost: {} still accept connections (stalled?)",
                alive.join(", ")
            )
        } else {
            format!("Lost peer: {}", lost.join(", "))
        };
        let checkpoints = joined.checkpoints.lock().ok().and_then(|c| c.clone());
        if checkpoints.is_some() {
            // The epoch that has just ended may still be on its way to disk: Burn hands
            // checkpoints to threads of its own, and exiting would cut them off. A moment for a
            // queued write to start, then every write lands before we say what there is.
            std::thread::sleep(Duration::from_millis(200));
            crate::atomic_recorder::wait_for_checkpoint_writes(Duration::from_secs(60));
        }
        let kept = match checkpoints {
            Some(dir) => match crate::last_complete_checkpoint(&dir, crate::CHECKPOINT_EXTENSION) {
                Some(e) => format!(
                    "the last good checkpoint is epoch {e} in {}: restart every node with --resume",
                    dir.display()
                ),
                None => "no epoch had finished, so there is no checkpoint".into(),
            },
            None => "training had not started".into(),
        };
        format!("{who}; {kept}.")
    }

    /// Logs why and ends the process: a blocked collective call cannot be cancelled.
    fn give_up(why: &str) -> ! {
        tracing::error!("node group: {why}");
        eprintln!("error: node group: {why}");
        std::process::exit(LOST_PEER_EXIT_CODE)
    }

    fn free_port(port: u16, what: &str) -> Result<(), String> {
        TcpListener::bind(("0.0.0.0", port))
            .map(drop)
            .map_err(|e| format!("port {port} for {what} is not free: {e}"))
    }

    /// The orchestrator on its own thread and runtime, for the rest of the process.
    fn start_orchestrator(port: u16) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the orchestrator's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("node-group-orchestrator".into())
            .spawn(move || runtime.block_on(burn_collective::start_global_orchestrator(port)))
            .map_err(|e| format!("cannot start the orchestrator: {e}"))?;
        tracing::info!("orchestrator listening on port {port}");
        Ok(())
    }

    /// Waits (up to `timeout`) until the orchestrator accepts connections: Burn's client would
    /// retry forever.
    fn reach_orchestrator(address: &str, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            match address.to_socket_addrs() {
                Ok(addrs) => {
                    for a in addrs {
                        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
                            Ok(_) => return Ok(()),
                            Err(e) => last = e.to_string(),
                        }
                    }
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!(
            "the orchestrator at {address} cannot be reached within {} s ({last}): is rank 0 \
             running, and is the port open?",
            timeout.as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> NodeGroup {
        NodeGroup::new(2, 0, "127.0.0.1:4710".into(), 4711)
    }

    #[test]
    fn counts_ranks_addresses_and_timeouts_that_cannot_work_are_one_line_each() {
        assert!(group().validate().is_ok());
        // Unless told, node r's data service listens on the orchestrator's port + 1 + r.
        let rank1 = NodeGroup { rank: 1, ..group() };
        assert_eq!(rank1.default_data_port(), Ok(4712));
        let high = NodeGroup {
            orchestrator: "h:65535".into(),
            ..rank1
        };
        assert!(high.default_data_port().unwrap_err().contains("past 65535"));
        let err = |g: NodeGroup| g.validate().unwrap_err();
        assert!(
            err(NodeGroup { rank: 2, ..group() }).contains("--node-rank 2 does not fit --nodes 2")
        );
        assert!(
            err(NodeGroup {
                nodes: 1,
                ..group()
            })
            .contains("at least two nodes")
        );
        assert!(
            err(NodeGroup {
                orchestrator: "4710".into(),
                ..group()
            })
            .contains("expected HOST:PORT")
        );
        assert!(
            err(NodeGroup {
                orchestrator: "host:port".into(),
                ..group()
            })
            .contains("HOST:PORT")
        );
        assert!(err(group().with_timeout_secs(0.0)).contains("--peer-timeout 0"));
    }

    #[cfg(feature = "multi-node")]
    #[test]
    fn a_busy_port_and_an_orchestrator_nobody_runs_are_refused_in_bounded_time() {
        type B = burn::backend::NdArray;
        let device = Default::default();
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let busy = NodeGroup {
            rank: 1,
            data_port: port,
            timeout_secs: 1.0,
            ..group()
        };
        let err = GradientSync::join::<B>(&busy, &device).unwrap_err();
        assert!(
            err.contains(&format!("port {port}")) && err.contains("not free"),
            "{err}"
        );

        drop(taken);
        let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let orchestrator = nobody.local_addr().unwrap().to_string();
        drop(nobody);
        let alone = NodeGroup {
            rank: 1,
            orchestrator: orchestrator.clone(),
            data_port: port,
            timeout_secs: 1.0,
            ..group()
        };
        let start = std::time::Instant::now();
        let err = GradientSync::join::<B>(&alone, &device).unwrap_err();
        assert!(
            err.contains(&orchestrator) && err.contains("cannot be reached"),
            "{err}"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
