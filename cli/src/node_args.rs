//! `--nodes`, `--node-rank`, `--orchestrator` ...: training as one of several machines
//! (`train`, `pretrain`), mapped onto a [`NodeGroup`].

use clap::Args;
use dmpo_train::NodeGroup;

use crate::Error;

/// Train as one node of a group of machines: gradients are summed across the nodes after every
/// backward pass through Burn's collective. Run the same command on every node with its own
/// --node-rank (docs/multi-node.md).
#[derive(Args, Clone, Default)]
pub struct NodeArgs {
    /// Nodes (machines) training together; --batch is the global batch, split evenly between
    /// every node's devices.
    #[arg(long, requires_all = ["node_rank", "orchestrator"])]
    nodes: Option<u32>,
    /// This node, 0 to --nodes − 1. Rank 0 starts the orchestrator.
    #[arg(long, requires = "nodes")]
    node_rank: Option<u32>,
    /// HOST:PORT of the orchestrator, the same on every node (rank 0 listens on that port).
    #[arg(long, requires = "nodes")]
    orchestrator: Option<String>,
    /// This node's address as the other nodes reach it.
    #[arg(long, default_value = "127.0.0.1", requires = "nodes")]
    node_host: String,
    /// The port of this node's tensor data service (peers download gradients from it) [default:
    /// the orchestrator's port + 1 + rank].
    #[arg(long, requires = "nodes")]
    data_port: Option<u16>,
    /// Seconds one gradient exchange (or joining) may wait on the others before this node gives
    /// up (exit code 3, naming the lost peer and the last checkpoint).
    #[arg(long, default_value_t = 120.0, requires = "nodes")]
    peer_timeout: f64,
    /// Rank 0 does not start the orchestrator: one runs elsewhere, at --orchestrator.
    #[arg(long, requires = "nodes")]
    external_orchestrator: bool,
}

impl NodeArgs {
    /// The node group the flags describe, checked; `None` without `--nodes`.
    pub fn group(&self) -> Result<Option<NodeGroup>, Error> {
        let (Some(nodes), Some(rank), Some(orchestrator)) =
            (self.nodes, self.node_rank, self.orchestrator.clone())
        else {
            return Ok(None);
        };
        let mut group = NodeGroup::new(nodes, rank, orchestrator, 0)
            .with_host(self.node_host.clone())
            .with_timeout_secs(self.peer_timeout)
            .with_start_orchestrator(!self.external_orchestrator);
        group.data_port = match self.data_port {
            Some(p) => p,
            None => group.default_data_port()?,
        };
        group.validate()?;
        Ok(Some(group))
    }
}
