use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use crate::vit::Block;

/// A block's MLP branch on the kept tokens alone: the kept rows of the whole batch are gathered
/// into one `[kept, D]` matrix, run through the MLP and scattered back; skipped tokens get 0.
/// No padding and no per-image loop: the MLP works token by token, so ragged counts are fine.
///
/// `normed`: `norm2(x)`, `[B, N, D]`; `keep`: `[B, N]`, 1 where a token goes through the MLP.
pub fn mlp_on_kept_tokens<B: Backend>(
    block: &Block<B>,
    normed: Tensor<B, 3>,
    keep: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [b, n, d] = normed.dims();
    // Reading the indices is a device sync, as `nonzero()` is in the public code.
    let idx = keep.reshape([b * n]).greater_elem(0.5).argwhere();
    let kept = idx.dims()[0];
    if kept == b * n {
        // Nothing to skip: the dense path, bit for bit the plain block.
        return block.mlp_branch(normed);
    }
    let zeros = Tensor::<B, 2>::zeros([b * n, d], &normed.device());
    if kept == 0 {
        return zeros.reshape([b, n, d]);
    }
    let idx = idx.reshape([kept]);
    let rows = normed
        .reshape([b * n, d])
        .select(0, idx.clone())
        .reshape([1, kept, d]);
    let out = block.mlp_branch(rows).reshape([kept, d]);
    zeros
        .select_assign(0, idx, out, IndexingUpdateOp::Add)
        .reshape([b, n, d])
}
