//! Checkpoints that are either whole or absent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError,
};
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where unfinished checkpoint files are written, inside the checkpoint directory.
pub const PARTIAL_DIR: &str = ".partial";

/// Checkpoint files this process is writing now. Burn writes checkpoints on threads of its own;
/// a process about to exit early (a node that lost its peer) waits for them, so the epoch it
/// has just finished is on disk rather than cut off mid-write.
static WRITES_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one write for as long as it lives, whichever way the write ends.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        WRITES_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        WRITES_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until this process writes no checkpoint file, for at most `timeout`; whether none is
/// being written when it returns. For an app that must exit before training ends (the node
/// group does when a peer is lost): the epoch just finished then lands whole.
pub fn wait_for_checkpoint_writes(timeout: Duration) -> bool {
    let start = Instant::now();
    while WRITES_IN_FLIGHT.load(Ordering::SeqCst) > 0 {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Wraps a Burn file recorder so that each file is written beside its destination, flushed to
/// disk, then renamed over it. Burn's own recorders write in place: a run killed mid-write
/// would leave a truncated checkpoint that `--resume` then fails on.
#[derive(Debug, Default, Clone)]
pub struct AtomicFileRecorder<R> {
    inner: R,
}

impl<R> AtomicFileRecorder<R> {
    pub fn new(inner: R) -> Self {
        Self { inner }
    }
}

/// `file` with the recorder's extension, as Burn names it.
fn with_extension<B: Backend, R: FileRecorder<B>>(file: &Path) -> PathBuf {
    let mut path = file.to_path_buf();
    path.set_extension(R::file_extension());
    path
}

impl<B: Backend, R: FileRecorder<B>> Recorder<B> for AtomicFileRecorder<R> {
    type Settings = R::Settings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let _writing = InFlight::start();
        let io = |e: std::io::Error| RecorderError::Unknown(format!("{}: {e}", file.display()));
        let target = with_extension::<B, R>(&file);
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .ok_or_else(|| RecorderError::Unknown(format!("{}: no file name", file.display())))?;
        let partial = dir.join(PARTIAL_DIR);
        std::fs::create_dir_all(&partial).map_err(io)?;
        // Burn sets the extension itself; give it the stem.
        let temp = partial.join(name);
        self.inner.save_item(item, temp.clone())?;
        let temp = with_extension::<B, R>(&temp);
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&temp, &target).map_err(io)?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        self.inner.load_item(file)
    }
}

impl<B: Backend, R: FileRecorder<B>> FileRecorder<B> for AtomicFileRecorder<R> {
    fn file_extension() -> &'static str {
        R::file_extension()
    }
}

/// The newest epoch with a complete checkpoint (model, optimiser and scheduler files all
/// present) in a run's `checkpoint/` directory; unfinished files never count.
pub fn last_complete_checkpoint(checkpoint_dir: &Path, extension: &str) -> Option<usize> {
    let epochs = std::fs::read_dir(checkpoint_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            name.strip_prefix("model-")?
                .strip_suffix(&format!(".{extension}"))?
                .parse::<usize>()
                .ok()
        });
    epochs
        .filter(|epoch| {
            ["optim", "scheduler"].iter().all(|part| {
                checkpoint_dir
                    .join(format!("{part}-{epoch}.{extension}"))
                    .is_file()
            })
        })
        .max()
}

/// The file format of checkpoints, written atomically.
pub type CheckpointRecorder = AtomicFileRecorder<NamedMpkFileRecorder<FullPrecisionSettings>>;

/// The extension of checkpoint files (`checkpoint/model-<epoch>.mpk`).
pub const CHECKPOINT_EXTENSION: &str = "mpk";

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};

    /// A node about to exit waits for a write in progress, and not for ever.
    #[test]
    fn waiting_for_writes_holds_while_one_is_in_flight() {
        let writing = InFlight::start();
        assert!(!wait_for_checkpoint_writes(Duration::from_millis(60)));
        drop(writing);
        // Other tests of this binary may be writing checkpoints too; they end.
        assert!(wait_for_checkpoint_writes(Duration::from_secs(30)));
    }

    type Atomic = AtomicFileRecorder<NamedMpkFileRecorder<FullPrecisionSettings>>;

    #[test]
    fn a_checkpoint_is_renamed_into_place_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let linear: Linear<NdArray> = LinearConfig::new(3, 2).init(&device);
        // Parameters initialise lazily: read them once so every clone shares the values.
        let saved = linear.weight.val().into_data().to_vec::<f32>().unwrap();
        let recorder = Atomic::default();
        Recorder::<NdArray>::record(
            &recorder,
            linear.clone().into_record(),
            dir.path().join("model-1"),
        )
        .unwrap();
        assert!(dir.path().join("model-1.mpk").is_file());
        // Nothing is left half-written beside it.
        let partial = dir.path().join(PARTIAL_DIR);
        assert_eq!(std::fs::read_dir(&partial).unwrap().count(), 0);
        let back: <Linear<NdArray> as Module<NdArray>>::Record =
            Recorder::<NdArray>::load(&recorder, dir.path().join("model-1"), &device).unwrap();
        let loaded = linear.clone().load_record(back);
        assert_eq!(
            loaded.weight.val().into_data().to_vec::<f32>().unwrap(),
            saved
        );
    }

    #[test]
    fn only_complete_checkpoints_count() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"x").unwrap();
        for part in ["model", "optim", "scheduler"] {
            touch(&format!("{part}-1.mpk"));
            touch(&format!("{part}-2.mpk"));
        }
        // Killed while writing epoch 3: the model is in place, the optimiser only half-written
        // in the partial directory, the scheduler not started.
        touch("model-3.mpk");
        std::fs::create_dir(dir.path().join(PARTIAL_DIR)).unwrap();
        std::fs::write(dir.path().join(PARTIAL_DIR).join("optim-3.mpk"), b"trunc").unwrap();
        assert_eq!(last_complete_checkpoint(dir.path(), "mpk"), Some(2));
        assert_eq!(
            last_complete_checkpoint(&dir.path().join("none"), "mpk"),
            None
        );
    }
}
