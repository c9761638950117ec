//! The files an `infer` call names: files as given, folders expanded to the files inside.

use std::path::{Path, PathBuf};

use super::DataError;

/// Files named directly, and every file inside named folders (sorted by name; not recursive).
/// A path that does not exist, or a folder with no file in it, is an error: asked to classify
/// a folder, finding nothing in it is a mistake worth a failing exit status.
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let read = std::fs::read_dir(p).map_err(|source| DataError::Io {
                path: p.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = read
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && !is_hidden(f))
                .collect();
            if files.is_empty() {
                return Err(DataError::Format {
                    path: p.clone(),
                    reason: "the folder holds no files to classify".into(),
                });
            }
            files.sort();
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(DataError::Io {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        }
    }
    Ok(out)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}
