//! Reading checkpoint files into a [`TensorMap`]: safetensors and PyTorch pickles, any float
//! dtype converted to `f32`, integers refused.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use burn::tensor::DType;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ImportError, Result};
use crate::tensor_map::{HostTensor, TensorMap, select_model_tensors};

/// Formats told apart by their first bytes, never by the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    SafeTensors,
    /// PyTorch ≥ 1.6 zip archive, or the legacy bare pickle.
    Pytorch,
    /// An ONNX model (a `ModelProto`), read by [`crate::onnx`].
    Onnx,
}

/// Reads the first bytes of `path` to tell which format it is.
pub fn sniff_format(path: &Path) -> Result<CheckpointFormat> {
    let mut head = [0u8; 9];
    let mut file = std::fs::File::open(path).map_err(|source| io(path, source))?;
    let n = read_up_to(&mut file, &mut head).map_err(|source| io(path, source))?;
    let head = &head[..n];
    // safetensors: little-endian u64 header length, then a JSON object. Checked first, since
    // the length's low byte may well be 0x80, a pickle's first byte.
    if n >= 9 && head[8] == b'{' {
        return Ok(CheckpointFormat::SafeTensors);
    }
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
        return Ok(CheckpointFormat::Pytorch);
    }
    // ONNX: a ModelProto begins with field 1, `ir_version`, a small varint (3 to 13 so far).
    if n >= 2 && head[0] == 0x08 && (1..0x40).contains(&head[1]) {
        return Ok(CheckpointFormat::Onnx);
    }
    let reason = if n == 0 {
        "the file is empty".to_string()
    } else {
        "neither a safetensors header, a zip archive, a pickle nor an ONNX model".to_string()
    };
    Err(ImportError::NotACheckpoint {
        path: path.to_path_buf(),
        reason,
    })
}

/// Reads every tensor of a checkpoint file as `f32`, keeping only the model's state dict when
/// the file wraps it (`{"model": ..., "optimizer": ...}`, `module.` prefixes).
pub fn read_checkpoint(path: &Path) -> Result<TensorMap> {
    let map = read_tensor_file(path)?;
    Ok(TensorMap::new(path, select_model_tensors(map.tensors)))
}

/// Reads every tensor of a safetensors or PyTorch file as `f32`, names unchanged.
pub fn read_tensor_file(path: &Path) -> Result<TensorMap> {
    let tensors = match sniff_format(path)? {
        CheckpointFormat::SafeTensors => read_safetensors(path)?,
        CheckpointFormat::Pytorch => read_pytorch(path)?,
        CheckpointFormat::Onnx => return Ok(crate::onnx::read_onnx(path)?.map),
    };
    if tensors.is_empty() {
        return Err(ImportError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: "it holds no tensors".into(),
        });
    }
    Ok(TensorMap::new(path, tensors))
}

/// Writes `f32` tensors as a safetensors file, atomically (temporary file, then rename).
pub fn write_safetensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), b, t.shape.clone())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, b, shape)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)
                .expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    let data = safetensors::serialize(views, None).map_err(|e| ImportError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    crate::converted::write_atomic(path, &data)
}

fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = std::fs::read(path).map_err(|source| io(path, source))?;
    // `deserialize` checks the header against the buffer: offsets past the end, overlapping or
    // missing byte ranges and sizes that disagree with the shapes are all refused there.
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ImportError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("invalid safetensors file: {e}"),
    })?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = decode_safetensors(view.dtype(), view.data()).ok_or_else(|| {
                ImportError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    key: name.clone(),
                    dtype: format!("{:?}", view.dtype()),
                }
            })?;
            Ok((name, HostTensor::new(view.shape().to_vec(), data)))
        })
        .collect()
}

fn decode_safetensors(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    fn chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes
            .chunks_exact(N)
            .map(|c| c.try_into().expect("chunk of N bytes"))
    }
    Some(match dtype {
        Dtype::F32 => chunks::<4>(bytes).map(f32::from_le_bytes).collect(),
        Dtype::F64 => chunks::<8>(bytes)
            .map(|b| f64::from_le_bytes(b) as f32)
            .collect(),
        Dtype::F16 => chunks::<2>(bytes)
            .map(|b| half::f16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::BF16 => chunks::<2>(bytes)
            .map(|b| half::bf16::from_le_bytes(b).to_f32())
            .collect(),
        _ => return None,
    })
}

fn read_pytorch(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    // burn-store's reader parses the pickle with a fixed set of known constructors: it never
    // imports or runs code named in the file, so a malicious pickle is refused, not executed.
    let reader =
        burn_store::pytorch::PytorchReader::new(path).map_err(|e| ImportError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    reader
        .into_tensors()
        .into_iter()
        .map(|(name, snapshot)| {
            let dtype = snapshot.dtype;
            if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                return Err(ImportError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    key: name,
                    dtype: format!("{dtype:?}"),
                });
            }
            let corrupt = |reason: String| ImportError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}`: {reason}"),
            };
            let data = snapshot.to_data().map_err(|e| corrupt(format!("{e:?}")))?;
            let shape = data.shape.to_vec();
            let values = data
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| corrupt(format!("{e:?}")))?;
            Ok((name, HostTensor::new(shape, values)))
        })
        .collect()
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn io(path: &Path, source: std::io::Error) -> ImportError {
    ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}
