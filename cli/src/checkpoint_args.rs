//! What a checkpoint file may not say about its architecture, given on the command line:
//! shared by `import`, `forward`, `bench-vit`, `train` and `compare`.

use clap::Args;
use dmpo_import::ImportOptions;

#[derive(Args, Clone)]
pub struct CheckpointArgs {
    /// timm architecture name (e.g. vit_small_patch16_224): gives the number of heads.
    #[arg(long)]
    pub arch: Option<String>,
    /// Number of attention heads [default: from --arch, a Hugging Face config.json, or the
    /// width / 64].
    #[arg(long)]
    pub heads: Option<usize>,
    /// Run the backbone at this input size: a checkpoint file's position grid is resampled to
    /// it (as timm does, or as the ONNX graph does) [default: the backbone's].
    #[arg(long)]
    pub img_size: Option<usize>,
}

impl CheckpointArgs {
    /// The import options these give, the others at their defaults.
    pub fn options(&self) -> ImportOptions {
        ImportOptions {
            arch: self.arch.clone(),
            num_heads: self.heads,
            img_size: self.img_size,
            ..Default::default()
        }
    }
}
