use std::path::Path;

use super::{
    DataError, ImageDataset, read_cifar10, read_cifar100, read_idx_split, read_image_folder,
    read_vtab_list,
};

const FASHION: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The on-disk layouts understood, detected from the files present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetFormat {
    /// `train-images-idx3-ubyte[.gz]`, `t10k-...`: MNIST, Fashion-MNIST.
    Idx,
    /// `data_batch_1.bin` ... `test_batch.bin`.
    Cifar10,
    /// `train.bin`, `test.bin`.
    Cifar100,
    /// `train800val200.txt` and `test.txt` (VTAB-1k).
    Vtab,
    /// `train/<class>/*` and `val/<class>/*` (or `test/`).
    Folder,
}

impl DatasetFormat {
    pub fn detect(dir: &Path) -> Option<Self> {
        let has = |f: &str| dir.join(f).exists();
        if has("train-images-idx3-ubyte") || has("train-images-idx3-ubyte.gz") {
            Some(Self::Idx)
        } else if has("data_batch_1.bin") {
            Some(Self::Cifar10)
        } else if has("train.bin") && has("test.bin") {
            Some(Self::Cifar100)
        } else if has("train800val200.txt") {
            Some(Self::Vtab)
        } else if dir.join("train").is_dir() {
            Some(Self::Folder)
        } else {
            None
        }
    }
}

/// A dataset's training and test splits.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: ImageDataset,
    pub test: ImageDataset,
}

/// Reads the train and test splits of the dataset in `dir`, detecting its layout.
pub fn load_splits(dir: &Path) -> Result<Splits, DataError> {
    let format = DatasetFormat::detect(dir).ok_or_else(|| DataError::Format {
        path: dir.to_path_buf(),
        reason: "no dataset found: expected MNIST/Fashion-MNIST IDX files, CIFAR-10/100 \
                 binaries, a VTAB-1k train800val200.txt, or train/ and val/ image folders"
            .into(),
    })?;
    let (train, test) = match format {
        DatasetFormat::Idx => {
            let fashion = dir.to_string_lossy().to_lowercase().contains("fashion");
            let classes: Vec<String> = if fashion {
                FASHION.iter().map(|s| s.to_string()).collect()
            } else {
                (0..10).map(|d| d.to_string()).collect()
            };
            (
                read_idx_split(dir, "train", &classes)?,
                read_idx_split(dir, "t10k", &classes)?,
            )
        }
        DatasetFormat::Cifar10 => read_cifar10(dir)?,
        DatasetFormat::Cifar100 => read_cifar100(dir)?,
        DatasetFormat::Vtab => {
            let mut train = read_vtab_list(dir, "train800val200.txt")?;
            let mut test = read_vtab_list(dir, "test.txt")?;
            let n = train.classes.len().max(test.classes.len());
            let classes: Vec<String> = (0..n).map(|c| c.to_string()).collect();
            train.classes = classes.clone();
            test.classes = classes;
            (train, test)
        }
        DatasetFormat::Folder => {
            let train = read_image_folder(&dir.join("train"))?;
            let test_dir = ["val", "test"]
                .iter()
                .map(|d| dir.join(d))
                .find(|d| d.is_dir())
                .ok_or_else(|| DataError::Format {
                    path: dir.to_path_buf(),
                    reason: "image folders need a val/ or test/ folder beside train/".into(),
                })?;
            let test = read_image_folder(&test_dir)?;
            if test.classes != train.classes {
                return Err(DataError::Format {
                    path: test_dir,
                    reason: format!(
                        "its classes {:?} differ from train/'s {:?}",
                        test.classes, train.classes
                    ),
                });
            }
            (train, test)
        }
    };
    tracing::info!(
        "{}: {format:?}, {} classes, {} train / {} test images",
        dir.display(),
        train.num_classes(),
        train.samples.len(),
        test.samples.len()
    );
    Ok(Splits { train, test })
}
