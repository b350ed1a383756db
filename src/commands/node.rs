//! The node side of `--via slurm`: the file that tells each srun task which host it stands for.

use std::collections::BTreeMap;
use std::path::Path;

/// What a node-local run reads from `--slurm-node FILE`: per Slurm node name, the inventory
/// host it stands for and that host's final variables.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeFile {
    pub nodes: BTreeMap<String, NodeEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeEntry {
    pub host: String,
    pub vars: crate::inventory::Vars,
}

/// The node side: which host this Slurm node stands for, from `SLURMD_NODENAME`.
pub fn node_entry(file: &Path) -> Result<NodeEntry, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the node file {}: {e}", file.display()))?;
    let mut f: NodeFile = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a node file: {e}", file.display()))?;
    let me = std::env::var("SLURMD_NODENAME").map_err(|_| {
        "SLURMD_NODENAME is not set: --slurm-node is for tasks that srun started (recipe run --via slurm)"
            .to_string()
    })?;
    f.nodes.remove(&me).ok_or_else(|| {
        format!(
            "Slurm node {me} is not in {}: it was not among the nodes the controller chose",
            file.display()
        )
    })
}
