//! `pretrain`: arguments mapped onto a [`PretrainJob`] and `dmpo_train::pretrain_backbone`.

use std::path::PathBuf;

use clap::Args;
use dmpo_infer::backend;
use dmpo_train::{PretrainJob, PretrainOverrides};

use crate::train_tasks::{TrainBackend, loss_check_every, training_devices};
use crate::{Error, paths};

/// Pretrain a small ViT from scratch, supervised: on a labelled dataset (`--data`; the embedded
/// demo backbone is Fashion-MNIST's training split less the demo's images), or on
/// formula-driven synthetic images when no dataset is given.
#[derive(Args)]
pub struct PretrainArgs {
    /// Where the backbone is written [default: assets/backbone].
    #[arg(long)]
    out: Option<PathBuf>,
    /// A labelled dataset (any layout `train` reads); only its training split is used for
    /// training and validation. Without it: synthetic patterns.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Datasets whose images (both splits, matched by pixels) are removed from the
    /// pretraining data, e.g. the demo subset the backbone will later be tuned on.
    #[arg(long)]
    exclude: Vec<PathBuf>,
    /// Checkpoints, the recipe and Burn's logs of the run, for `--resume` [default:
    /// runs/pretrain].
    #[arg(long)]
    work: Option<PathBuf>,
    /// Continue the run in --work from its last complete checkpoint, with its saved recipe.
    #[arg(long)]
    resume: bool,
    /// Start from this backbone's weights instead of a random initialisation (a second
    /// stage: train a pretrained backbone further, usually with a lower --lr); it must have
    /// the recipe's architecture.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Override the recipe's peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Override the recipe's warm-up epochs.
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Override the recipe's epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override the recipe's batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Override the recipe's synthetic images per class (synthetic pretraining only).
    #[arg(long)]
    per_class: Option<usize>,
    /// Override the recipe's training images held out for validation (dataset only).
    #[arg(long)]
    valid_images: Option<usize>,
    /// Threads decoding and augmenting images.
    #[arg(long)]
    workers: Option<usize>,
    /// Train data-parallel on these GPUs, as `train --devices` (--batch is the global batch).
    #[arg(long, value_delimiter = ',')]
    devices: Vec<usize>,
    #[command(flatten)]
    nodes: crate::node_args::NodeArgs,
    /// Override the recipe's number of blocks.
    #[arg(long)]
    depth: Option<usize>,
    /// Override the recipe's token width (the MLP is 4× as wide).
    #[arg(long)]
    width: Option<usize>,
    /// Override the recipe's attention heads (they must divide the width).
    #[arg(long)]
    num_heads: Option<usize>,
    /// Deep supervision: also train an auxiliary classifier after each of these blocks
    /// (e.g. 1,2,3), dropped once pretraining ends; makes the early blocks' features
    /// discriminative for early exits.
    #[arg(long, value_delimiter = ',')]
    aux_exits: Vec<usize>,
}

pub fn pretrain(a: PretrainArgs) -> Result<(), Error> {
    let devices = training_devices(&a.devices)?;
    let job = PretrainJob {
        out: paths::normalised(&a.out.unwrap_or_else(paths::default_backbone)),
        data: a.data,
        exclude: a.exclude,
        work: paths::normalised(&a.work.unwrap_or_else(paths::default_pretrain_work)),
        resume: a.resume,
        overrides: PretrainOverrides {
            init: a.init,
            lr: a.lr,
            warmup_epochs: a.warmup_epochs,
            epochs: a.epochs,
            batch: a.batch,
            per_class: a.per_class,
            valid_images: a.valid_images,
            depth: a.depth,
            width: a.width,
            num_heads: a.num_heads,
            aux_exits: a.aux_exits,
        },
        workers: a.workers,
        loss_check_every: loss_check_every(),
        nodes: a.nodes.group()?,
        backend: backend::NAME.into(),
    };
    tracing::info!(
        "pretrain: output {}, work {}",
        job.out.display(),
        job.work.display()
    );
    dmpo_train::pretrain_backbone::<TrainBackend>(&job, &devices)?;
    Ok(())
}
