//! Default paths, resolved when a task runs (not when the binary was built): relative to the
//! workspace `cargo xtask` runs in (it passes `DMPO_WORKSPACE`), else to the current folder.

use std::path::{Component, Path, PathBuf};

/// Set by `cargo xtask` to the root of the workspace it runs in.
const WORKSPACE_VAR: &str = "DMPO_WORKSPACE";

/// `relative` inside the workspace root (or the current folder), normalised.
pub fn in_workspace(relative: &str) -> PathBuf {
    let root = std::env::var_os(WORKSPACE_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    normalised(&root.join(relative))
}

/// The embedded demo backbone.
pub fn default_backbone() -> PathBuf {
    in_workspace("assets/backbone")
}

/// The embedded Fashion-MNIST demo subset.
pub fn default_data() -> PathBuf {
    in_workspace("assets/fashion-mnist-demo")
}

/// Where the main job writes its model.
pub fn default_out() -> PathBuf {
    in_workspace("runs/default")
}

/// Where `pretrain` keeps its checkpoints.
pub fn default_pretrain_work() -> PathBuf {
    in_workspace("runs/pretrain")
}

/// An absolute path without `.` and `..` components (resolved lexically: the folder need not
/// exist yet), as printed in logs.
pub fn normalised(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_resolved_and_the_path_made_absolute() {
        let p = normalised(Path::new("/a/b/../c/./d"));
        assert_eq!(p, PathBuf::from("/a/c/d"));
        assert!(normalised(Path::new("x/../y")).is_absolute());
        assert!(normalised(Path::new("x/../y")).ends_with("y"));
    }
}
