//! Training as a group of nodes, on loopback: two processes (this test binary run again as a
//! child, one Flex device each) train together and end with the weights and losses of one
//! process on the same global batch; a node whose peer is killed gives up in bounded time naming
//! it, and `--resume` on both continues to the uninterrupted run's weights.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use dmpo_train::{NodeGroup, TrainConfig};

mod common;
use common::{parameters, preprocess, stripes, tiny_model, train_seeding};

type B = Autodiff<Flex>;

/// Set in a child: `rank,nodes,orchestrator port,epochs,resume,images,devices,out dir`.
const CHILD: &str = "DMPO_TEST_NODE";

/// Global batches of 16: with 64 images every node takes 8 of each.
fn config(epochs: usize) -> TrainConfig {
    TrainConfig::new()
        .with_epochs(epochs)
        .with_batch_size(16)
        .with_lr(5e-3)
        .with_num_workers(1)
}

/// Trains the tiny model on `dir`, alone or as a node, and leaves its parameters in
/// `dir/params.json`.
fn train(
    dir: &Path,
    (images, devices): (usize, usize),
    epochs: usize,
    resume: bool,
    group: Option<NodeGroup>,
) -> Vec<f32> {
    let checkpoints = dir.join("checkpoint");
    let resume_epoch = resume
        .then(|| {
            dmpo_train::last_complete_checkpoint(&checkpoints, dmpo_train::CHECKPOINT_EXTENSION)
        })
        .flatten();
    let model = train_seeding(
        tiny_model::<B>(0),
        stripes(images),
        stripes(16),
        &preprocess(),
        &config(epochs).with_nodes(group),
        dir,
        resume_epoch,
        &vec![Default::default(); devices],
    )
    .unwrap();
    let params = parameters(&model);
    std::fs::write(
        dir.join("params.json"),
        serde_json::to_string(&params).unwrap(),
    )
    .unwrap();
    params
}

/// The child's side: not a test of its own (it returns at once unless started by a test below).
#[test]
fn node_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let f: Vec<&str> = spec.split(',').collect();
    let (rank, nodes, port, epochs): (u32, u32, u16, usize) = (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
    );
    let group = NodeGroup::new(
        nodes,
        rank,
        format!("127.0.0.1:{port}"),
        port + 1 + rank as u16,
    )
    // Generous for loaded CI machines, and still under the 60 s the kill test allows.
    .with_timeout_secs(30.0);
    let shape = (f[5].parse().unwrap(), f[6].parse().unwrap());
    train(
        Path::new(f[7]),
        shape,
        epochs,
        f[4] == "resume",
        Some(group),
    );
}

/// Three free ports in a row on loopback (orchestrator, node 0, node 1).
fn free_ports() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        if port < 65000
            && (1..3).all(|i| std::net::TcpListener::bind(("0.0.0.0", port + i)).is_ok())
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
}

fn spawn(
    rank: u32,
    port: u16,
    epochs: usize,
    resume: bool,
    (images, devices): (usize, usize),
    out: &Path,
) -> Child {
    std::fs::create_dir_all(out).unwrap();
    let spec = format!(
        "{rank},2,{port},{epochs},{},{images},{devices},{}",
        if resume { "resume" } else { "fresh" },
        out.display()
    );
    Command::new(std::env::current_exe().unwrap())
        .args(["node_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, spec)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(out.join(format!("stderr-{rank}.log"))).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; kills it past that.
fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn read_params(dir: &Path) -> Vec<f32> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("params.json")).unwrap()).unwrap()
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs node 0 and node 1 in `dirs` to their end (fresh or resumed); both must succeed.
fn run_group(dirs: &[PathBuf; 2], shape: (usize, usize), epochs: usize, resume: bool) {
    let port = free_ports();
    let mut children: Vec<Child> = (0..2)
        .map(|r| spawn(r, port, epochs, resume, shape, &dirs[r as usize]))
        .collect();
    for (r, c) in children.iter_mut().enumerate() {
        let status = wait(c, Duration::from_secs(240));
        let log =
            std::fs::read_to_string(dirs[r].join(format!("stderr-{r}.log"))).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "node {r} (resumed: {resume}): {status:?}\n{}",
            &log[log.len().saturating_sub(3000)..]
        );
    }
}

fn two_nodes(root: &Path, shape: (usize, usize), epochs: usize) -> [PathBuf; 2] {
    let dirs = [root.join("node-0"), root.join("node-1")];
    run_group(&dirs, shape, epochs, false);
    dirs
}

#[test]
fn two_nodes_on_loopback_train_as_one_process_on_the_same_global_batch() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dirs = two_nodes(root.path(), (64, 1), 2);
    let one_dir = root.path().join("one");
    let one = train(&one_dir, (64, 1), 2, false, None);
    let (node0, node1) = (read_params(&dirs[0]), read_params(&dirs[1]));
    // Each node saw only its half of every batch: without the gradients summed across the
    // group, their weights would part.
    assert_eq!(worst(&node0, &node1), 0.0, "the nodes' weights differ");
    let w = worst(&one, &node0);
    assert!(w < 1e-4, "weights differ from one process by up to {w}");
    assert_ne!(
        one,
        parameters(&burn::module::AutodiffModule::valid(&tiny_model::<B>(0))),
        "training changed nothing"
    );

    let one_metrics = dmpo_train::read_epoch_metrics(&one_dir);
    let metrics = dirs.clone().map(|d| dmpo_train::read_epoch_metrics(&d));
    for epoch in 1..=2 {
        let key = |split: &str| (split.to_string(), epoch, "Loss".to_string());
        // Validation: every node validates the whole held-out set with the same weights.
        for m in &metrics {
            let (a, b) = (one_metrics[&key("valid")], m[&key("valid")]);
            assert!(
                (a - b).abs() < 1e-4,
                "valid loss of epoch {epoch}: {a} vs {b}"
            );
        }
        // Training: each node's loss is over its half; the halves are equal, so their mean is
        // the loss over the whole batch.
        let mean = (metrics[0][&key("train")] + metrics[1][&key("train")]) / 2.0;
        let one = one_metrics[&key("train")];
        assert!(
            (one - mean).abs() < 1e-4,
            "train loss of epoch {epoch}: {one} vs {mean}"
        );
    }
}

#[test]
fn a_killed_node_stops_its_peer_and_both_resume_to_the_uninterrupted_weights() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let uninterrupted = two_nodes(&root.path().join("whole"), (64, 1), 3);
    let expected = read_params(&uninterrupted[0]);

    let port = free_ports();
    let dirs = [root.path().join("node-0"), root.path().join("node-1")];
    let mut first = spawn(0, port, 3, false, (64, 1), &dirs[0]);
    let mut second = spawn(1, port, 3, false, (64, 1), &dirs[1]);
    // Node 1 dies once both nodes have their first epoch on disk (mid-way through the second;
    // killed as soon as its own was there, node 1 could take down node 0 still in the last
    // exchange of the first epoch, with nothing to resume from).
    let start = Instant::now();
    let on_disk = |dir: &Path| {
        dmpo_train::last_complete_checkpoint(
            &dir.join("checkpoint"),
            dmpo_train::CHECKPOINT_EXTENSION,
        )
        .is_some()
    };
    while !dirs.iter().all(|d| on_disk(d)) {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no checkpoint on both nodes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    second.kill().unwrap();
    second.wait().unwrap();
    let killed = Instant::now();
    let status = wait(&mut first, Duration::from_secs(60)).expect("node 0 still running 60 s on");
    let log = std::fs::read_to_string(dirs[0].join("stderr-0.log")).unwrap();
    assert_eq!(
        status.code(),
        Some(dmpo_train::LOST_PEER_EXIT_CODE),
        "{status:?} after {:?}\n{log}",
        killed.elapsed()
    );
    assert!(
        log.contains("node 1") && log.contains("--resume"),
        "{}",
        &log[log.len().saturating_sub(3000)..]
    );

    // Both resume from the checkpoint they have in common.
    run_group(&dirs, (64, 1), 3, true);
    for dir in &dirs {
        let w = worst(&expected, &read_params(dir));
        assert!(w < 1e-4, "resumed weights differ by up to {w}");
    }
}

#[test]
fn short_last_batches_and_several_devices_per_node_train_as_one_process() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    // 49 images: three batches of 16, then one image, which node 0 takes while node 1 steps
    // with nothing (share 0); 39 end with 7, split 3 + 4; and 39 over two nodes of two devices
    // each (Burn's multi-device strategy inside each node), 7 split 1 + 2 + 2 + 2. Every time
    // the nodes end where one process on one device does.
    for shape in [(49, 1), (39, 1), (39, 2)] {
        let root = tempfile::tempdir().unwrap();
        let dirs = two_nodes(root.path(), shape, 2);
        let one = train(&root.path().join("one"), (shape.0, 1), 2, false, None);
        for dir in &dirs {
            let w = worst(&one, &read_params(dir));
            assert!(w < 1e-4, "{shape:?}: weights differ by up to {w}");
        }
    }
}
