//! ViTs exported to ONNX (`torch.onnx.export` of a timm or Hugging Face model): the weights are
//! read with onnx-ir's protobuf bindings and given the names of the modules that use them, so the
//! rest of the importer treats the file as the state dict it came from.
//!
//! Exporters keep a parameter's name when an op reads it directly (`…query.bias` for an `Add`),
//! but the weights of `MatMul`s are transposed copies with anonymous names (`onnx::MatMul_1966`);
//! the *node* that reads them is still named after its module
//! (`/backbone/encoder/layer.0/attention/attention/query/MatMul`). Constant folding may also
//! split a Hugging Face position embedding into its class-token row and its patch grid. This
//! module undoes both, and reads off the graph what the weights cannot tell: the input
//! resolution, how the graph resamples the position grid to it, and the LayerNorm epsilon.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use onnx_ir::{GraphProto, ModelProto, TensorProto};
use protobuf::Message;

use crate::error::{ImportError, Result};
use crate::resample::Resampling;
use crate::tensor_map::{HostTensor, TensorMap, select_model_tensors};

/// An ONNX file's ViT weights under their state-dict names, with what its graph says beyond them.
pub struct OnnxVit {
    /// Hugging Face or timm names, as in the checkpoint the file was exported from.
    pub map: TensorMap,
    /// The square input size the graph was exported for, when it is static.
    pub input_size: Option<usize>,
    /// How the graph resamples the position grid to the input size, when it does.
    pub resampling: Option<Resampling>,
    /// The LayerNorm epsilon the graph adds.
    pub norm_eps: Option<f64>,
    /// The attention heads, from the head width the graph splits the tokens into.
    pub num_heads: Option<usize>,
}

// TensorProto.DataType values.
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;
const BFLOAT16: i32 = 16;
const INT32: i32 = 6;
const INT64: i32 = 7;
// TensorProto.DataLocation.EXTERNAL.
const EXTERNAL: i32 = 1;

/// Reads the ViT inside an ONNX file.
pub fn read_onnx(path: &Path) -> Result<OnnxVit> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let model = ModelProto::parse_from_tokio_bytes(&bytes::Bytes::from(bytes)).map_err(|e| {
        ImportError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not a readable ONNX protobuf (truncated?): {e}"),
        }
    })?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| not_a_vit(path, "the file holds no graph".into()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let nodes = nodes_of(graph);
    let values = graph_values(graph, &nodes, path, dir)?;
    let tensors = state_dict(values.floats, &nodes);

    let found = tensors.len();
    let tensors = select_model_tensors(tensors);
    let pos_embed = ["pos_embed", "embeddings.position_embeddings"]
        .iter()
        .find_map(|k| tensors.get(*k));
    let Some(width) = pos_embed.and_then(|p| p.shape.last().copied()) else {
        return Err(not_a_vit(
            path,
            format!(
                "none of its {found} weight tensors is a ViT position embedding (`pos_embed` or \
                 `embeddings.position_embeddings`, named or read by a node of an `embeddings` \
                 module)"
            ),
        ));
    };
    let num_heads = head_width(&nodes, &values.ints)
        .filter(|&w| w > 0 && width % w == 0)
        .map(|w| width / w);
    Ok(OnnxVit {
        map: TensorMap::new(path, tensors),
        num_heads,
        input_size: input_size(&model),
        resampling: resampling(&nodes),
        norm_eps: norm_eps(&nodes, &values.scalars),
    })
}

/// The graph's nodes as this module reads them.
fn nodes_of(graph: &GraphProto) -> Vec<Node<'_>> {
    graph
        .node
        .iter()
        .map(|n| Node {
            name: &n.name,
            scopes: n
                .metadata_props
                .iter()
                .find(|p| p.key == "pkg.torch.onnx.name_scopes")
                .map(|p| p.value.as_str()),
            op_type: &n.op_type,
            input: &n.input,
            output: &n.output,
            attrs: n
                .attribute
                .iter()
                .map(|a| Attr {
                    name: &a.name,
                    f: a.f,
                    i: a.i,
                    s: &a.s,
                    t: a.t.as_ref(),
                })
                .collect(),
        })
        .collect()
}

/// What the graph holds besides its nodes.
struct GraphValues<'a> {
    /// Every float tensor: initializers, and the values of Constant nodes.
    floats: Vec<(String, HostTensor)>,
    /// One-element floats by name (epsilons, scales).
    scalars: HashMap<&'a str, f64>,
    /// Small integer tensors: the shapes the graph reshapes to.
    ints: HashMap<&'a str, Vec<i64>>,
}

fn graph_values<'a>(
    graph: &'a GraphProto,
    nodes: &[Node<'a>],
    path: &Path,
    dir: &Path,
) -> Result<GraphValues<'a>> {
    let mut values: Vec<(String, HostTensor)> = Vec::new();
    let mut scalars: HashMap<&str, f64> = HashMap::new();
    let mut ints: HashMap<&str, Vec<i64>> = HashMap::new();
    for t in &graph.initializer {
        if let Some(v) = decode_ints(t) {
            ints.insert(&t.name, v);
        }
        if let Some(h) = decode(t, path, dir)? {
            if h.data.len() == 1 {
                scalars.insert(&t.name, widen(h.data[0]));
            }
            values.push((t.name.clone(), h));
        }
    }
    for node in nodes.iter().filter(|n| n.op_type == "Constant") {
        let Some(out) = node.output.first() else {
            continue;
        };
        for a in &node.attrs {
            if let (Some(t), "value") = (a.t, a.name)
                && let Some(v) = decode_ints(t)
            {
                ints.insert(out, v);
            }
            let value = match a.name {
                "value" => match a.t {
                    Some(t) => decode(t, path, dir)?,
                    None => None,
                },
                "value_float" => Some(HostTensor::new(vec![], vec![a.f])),
                _ => None,
            };
            if let Some(h) = value {
                if h.data.len() == 1 {
                    scalars.insert(out, widen(h.data[0]));
                } else {
                    values.push((out.clone(), h));
                }
            }
        }
    }
    Ok(GraphValues {
        floats: values,
        scalars,
        ints,
    })
}

/// The float tensors under their state-dict names: named parameters as they are, anonymous
/// ones named after the module of the node that reads them, a split position embedding rejoined.
fn state_dict(
    values: Vec<(String, HostTensor)>,
    nodes: &[Node<'_>],
) -> BTreeMap<String, HostTensor> {
    let mut consumers: HashMap<&str, Vec<(&Node<'_>, usize)>> = HashMap::new();
    for node in nodes {
        for (i, input) in node.input.iter().enumerate() {
            consumers.entry(input.as_str()).or_default().push((node, i));
        }
    }

    let mut tensors = BTreeMap::new();
    // Pieces of a position embedding split by constant folding, per module.
    let mut pos_pieces: BTreeMap<String, Vec<HostTensor>> = BTreeMap::new();
    for (name, tensor) in values {
        if is_parameter_name(&name) {
            tensors.insert(name, tensor);
            continue;
        }
        let Some(&(node, slot)) = consumers.get(name.as_str()).and_then(|c| c.first()) else {
            continue;
        };
        let Some(module) = module_of(node) else {
            continue;
        };
        let rank = tensor.shape.len();
        match (node.op_type, slot, rank) {
            // y = x · W with W [in, out]: PyTorch's Linear stores [out, in].
            ("MatMul", 1, 2) => {
                tensors.insert(format!("{module}.weight"), transpose(&tensor));
            }
            ("Gemm", 1, 2) => {
                let trans_b = node.attrs.iter().any(|a| a.name == "transB" && a.i != 0);
                let w = if trans_b { tensor } else { transpose(&tensor) };
                tensors.insert(format!("{module}.weight"), w);
            }
            ("Gemm", 2, 1) | ("Add", _, 1) | ("Conv", 2, 1) => {
                tensors.insert(format!("{module}.bias"), tensor);
            }
            ("Conv", 1, 4) => {
                tensors.insert(format!("{module}.weight"), tensor);
            }
            (_, _, 3) if module.ends_with("embeddings") && tensor.shape[0] == 1 => {
                pos_pieces.entry(module).or_default().push(tensor);
            }
            _ => {}
        }
    }
    for (module, mut pieces) in pos_pieces {
        let key = format!("{module}.position_embeddings");
        if tensors.contains_key(&key) {
            continue;
        }
        // The prefix (class-token) rows first, then the patch grid.
        pieces.sort_by_key(|p| p.shape[1]);
        let dim = pieces[0].shape[2];
        if pieces.iter().any(|p| p.shape[2] != dim) {
            continue;
        }
        let rows = pieces.iter().map(|p| p.shape[1]).sum();
        let data = pieces.into_iter().flat_map(|p| p.data).collect();
        tensors.insert(key, HostTensor::new(vec![1, rows, dim], data));
    }
    tensors
}

/// A graph node as this module reads it (onnx-ir does not export the protobuf's `NodeProto`).
struct Node<'a> {
    name: &'a str,
    /// The dynamo exporter's `pkg.torch.onnx.name_scopes`, e.g.
    /// `['', 'blocks', 'blocks.0', 'blocks.0.attn', 'blocks.0.attn.qkv', 'linear']`.
    scopes: Option<&'a str>,
    op_type: &'a str,
    input: &'a [String],
    output: &'a [String],
    attrs: Vec<Attr<'a>>,
}

struct Attr<'a> {
    name: &'a str,
    f: f32,
    i: i64,
    s: &'a [u8],
    t: Option<&'a TensorProto>,
}

/// The `f64` a float attribute was written from (`1e-6`, not `9.99999997e-7`): the shortest
/// decimal that reads back as the same `f32`.
fn widen(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

fn not_a_vit(path: &Path, reason: String) -> ImportError {
    ImportError::Config {
        path: path.to_path_buf(),
        reason: format!("not a plain ViT exported to ONNX: {reason}"),
    }
}

/// Named parameters (`backbone.encoder.layer.0.norm1.weight`, `cls_token`) against the names
/// exporters make up (`onnx::MatMul_1966`, `/blocks.0/attn/Constant_output_0`, dynamo's
/// `val_74`): a parameter's name is a dotted module path, or one of timm's top-level tensors.
fn is_parameter_name(name: &str) -> bool {
    const TOP_LEVEL: [&str; 3] = ["cls_token", "pos_embed", "reg_token"];
    let made_up = name.is_empty() || name.starts_with("onnx::") || name.starts_with('/');
    !made_up && (name.contains('.') || TOP_LEVEL.contains(&name))
}

/// The module a node belongs to. The TorchScript exporter puts the scopes in the node's name:
/// `/backbone/encoder/layer.0/attention/attention/query/MatMul` →
/// `backbone.encoder.layer.0.attention.attention.query`, and a scope may repeat its parent's
/// (timm's `nn.Sequential`: `/blocks/blocks.0/attn/qkv/MatMul` → `blocks.0.attn.qkv`). The dynamo
/// exporter (`torch.onnx.export(dynamo=True)`) names nodes `node_MatMul_11` and lists the
/// qualified scopes in metadata instead, the operation last.
fn module_of(node: &Node<'_>) -> Option<String> {
    if let Some(list) = node.scopes {
        let scopes: Vec<&str> = list
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"'))
            .collect();
        return scopes
            .len()
            .checked_sub(2)
            .map(|i| scopes[i].to_string())
            .filter(|m| !m.is_empty());
    }
    let (scopes, _op) = node.name.strip_prefix('/')?.rsplit_once('/')?;
    let mut parts: Vec<&str> = Vec::new();
    for scope in scopes.split('/') {
        if let Some(last) = parts.last()
            && scope
                .strip_prefix(*last)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            parts.pop();
        }
        parts.push(scope);
    }
    Some(parts.join("."))
}

fn transpose(t: &HostTensor) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut data = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            data[c * rows + r] = t.data[r * cols + c];
        }
    }
    HostTensor::new(vec![cols, rows], data)
}

/// A float tensor as `f32`; `None` for the integer tensors graphs use for shapes and indices.
fn decode(t: &TensorProto, path: &Path, dir: &Path) -> Result<Option<HostTensor>> {
    if !matches!(t.data_type, FLOAT | FLOAT16 | DOUBLE | BFLOAT16) {
        return Ok(None);
    }
    let corrupt = |reason: String| ImportError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("tensor `{}`: {reason}", t.name),
    };
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = shape.iter().product();
    let external;
    let raw: &[u8] = if t.data_location.value() == EXTERNAL {
        external = read_external(t, path, dir)?;
        &external
    } else {
        &t.raw_data
    };
    let data: Vec<f32> = if !raw.is_empty() {
        let width = match t.data_type {
            FLOAT => 4,
            DOUBLE => 8,
            _ => 2,
        };
        if raw.len() != count * width {
            return Err(corrupt(format!(
                "{} bytes of data for shape {shape:?}",
                raw.len()
            )));
        }
        match t.data_type {
            FLOAT => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DOUBLE => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            FLOAT16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    } else {
        match t.data_type {
            FLOAT => t.float_data.clone(),
            DOUBLE => t.double_data.iter().map(|&v| v as f32).collect(),
            FLOAT16 => t
                .int32_data
                .iter()
                .map(|&v| half::f16::from_bits(v as u16).to_f32())
                .collect(),
            _ => t
                .int32_data
                .iter()
                .map(|&v| half::bf16::from_bits(v as u16).to_f32())
                .collect(),
        }
    };
    if data.len() != count {
        return Err(corrupt(format!(
            "{} values for shape {shape:?}",
            data.len()
        )));
    }
    Ok(Some(HostTensor::new(shape, data)))
}

/// The bytes of a tensor stored beside the model (`location`, `offset`, `length` entries).
fn read_external(t: &TensorProto, path: &Path, dir: &Path) -> Result<Vec<u8>> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let corrupt = |reason: String| ImportError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("tensor `{}`: {reason}", t.name),
    };
    let location =
        entry("location").ok_or_else(|| corrupt("external data without a `location`".into()))?;
    // ONNX locations are relative to the model's directory; a file must not reach outside it.
    let inside = Path::new(location).components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !inside {
        return Err(corrupt(format!(
            "external data location `{location}` is not a path inside the model's directory"
        )));
    }
    let file: PathBuf = dir.join(location);
    let bytes = std::fs::read(&file).map_err(|e| ImportError::Config {
        path: path.to_path_buf(),
        reason: format!(
            "tensor `{}` is stored in the external data file {}, which cannot be read ({e}); \
             keep the model's data files beside it",
            t.name,
            file.display()
        ),
    })?;
    let number = |key: &str| -> Result<Option<usize>> {
        entry(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| corrupt(format!("external data {key} `{v}` is not a number")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?.unwrap_or(bytes.len().saturating_sub(offset));
    bytes
        .get(offset..offset.saturating_add(length))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            corrupt(format!(
                "bytes {offset}..{} lie past the end of {} ({} bytes)",
                offset.saturating_add(length),
                file.display(),
                bytes.len()
            ))
        })
}

/// The integer values of a small int64 / int32 tensor held in the file (shapes, axes).
fn decode_ints(t: &TensorProto) -> Option<Vec<i64>> {
    let count: i64 = t.dims.iter().product();
    if !matches!(t.data_type, INT32 | INT64) || count > 16 {
        return None;
    }
    let raw = &t.raw_data;
    Some(match t.data_type {
        INT64 if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        INT32 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
            .collect(),
        INT64 => t.int64_data.clone(),
        _ => t.int32_data.iter().map(|&v| v as i64).collect(),
    })
}

/// The width of one attention head: the last dimension of the shape the first attention
/// module reshapes its projections to, `[B, N, heads, head]`, `[B, N, 3, heads, head]` or
/// `[B, N, -1, head]`, whether the shape is one constant or a `Concat` ending in a constant.
fn head_width(nodes: &[Node<'_>], ints: &HashMap<&str, Vec<i64>>) -> Option<usize> {
    let reshape = nodes.iter().find(|n| {
        n.op_type == "Reshape"
            && module_of(n)
                .and_then(|m| m.rsplit('.').next().map(|last| last.starts_with("att")))
                .unwrap_or(false)
    })?;
    let shape = reshape.input.get(1)?.as_str();
    let last = match ints.get(shape) {
        Some(v) => *v.last()?,
        None => {
            let concat = nodes
                .iter()
                .find(|n| n.op_type == "Concat" && n.output.iter().any(|o| o == shape))?;
            *ints.get(concat.input.last()?.as_str())?.last()?
        }
    };
    usize::try_from(last).ok()
}

/// The side of the graph's image input when it is a static square `[N, C, S, S]`.
fn input_size(model: &ModelProto) -> Option<usize> {
    let graph = model.graph.as_ref()?;
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph
        .input
        .iter()
        .find(|i| !initializers.contains(&i.name.as_str()))?;
    let dims: Vec<i64> = input
        .type_
        .tensor_type()
        .shape
        .dim
        .iter()
        .map(|d| d.dim_value())
        .collect();
    (dims.len() == 4 && dims[2] > 0 && dims[2] == dims[3]).then_some(dims[2] as usize)
}

/// The interpolation of a `Resize` node inside the embeddings (Hugging Face's
/// `interpolate_pos_encoding`).
fn resampling(nodes: &[Node<'_>]) -> Option<Resampling> {
    let resize = nodes.iter().find(|n| {
        n.op_type == "Resize" && module_of(n).is_some_and(|m| m.ends_with("embeddings"))
    })?;
    let text = |name: &str| {
        resize
            .attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| String::from_utf8_lossy(a.s).into_owned())
    };
    let mode = text("mode").unwrap_or_else(|| "nearest".into());
    let coordinates = text("coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into());
    if mode != "cubic" || !matches!(coordinates.as_str(), "half_pixel" | "pytorch_half_pixel") {
        tracing::warn!(
            "the graph resamples its position grid with `{mode}`/`{coordinates}`; importing \
             with timm's antialiased bicubic instead"
        );
        return None;
    }
    let a = resize
        .attrs
        .iter()
        .find(|a| a.name == "cubic_coeff_a")
        .map_or(-0.75, |a| widen(a.f));
    Some(Resampling::Bicubic { a })
}

/// A `LayerNormalization` node's epsilon, or the constant a decomposed LayerNorm adds to the
/// variance (`ReduceMean` → `Add ε`), as opsets before 17 export it.
fn norm_eps(nodes: &[Node<'_>], scalars: &HashMap<&str, f64>) -> Option<f64> {
    if let Some(ln) = nodes.iter().find(|n| n.op_type == "LayerNormalization") {
        let eps = ln.attrs.iter().find(|a| a.name == "epsilon");
        return Some(eps.map_or(1e-5, |a| widen(a.f)));
    }
    let means: Vec<&str> = nodes
        .iter()
        .filter(|n| n.op_type == "ReduceMean")
        .filter_map(|n| n.output.first().map(String::as_str))
        .collect();
    nodes
        .iter()
        .filter(|n| n.op_type == "Add" && n.input.len() == 2)
        .find_map(|n| {
            let (a, b) = (n.input[0].as_str(), n.input[1].as_str());
            if means.contains(&a) {
                scalars.get(b).copied()
            } else if means.contains(&b) {
                scalars.get(a).copied()
            } else {
                None
            }
        })
}
