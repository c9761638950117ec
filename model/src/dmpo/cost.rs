//! Analytic cost in multiply-accumulates (MACs), fvcore's convention (one multiply-add = 1;
//! norms, softmax and activations not counted), which papers print as "FLOPs".
//! For ViT-B/16 at 224: one block 1.454 G, patch embedding 0.116 G, the model 17.56 G.

/// One transformer block on `tokens` tokens of width `dim` with an MLP of width `hidden`:
/// qkv, q·kᵀ, attn·v, proj, fc1, fc2.
pub fn vit_block_macs(tokens: u64, dim: u64, hidden: u64) -> u64 {
    vit_attention_macs(tokens, dim) + tokens * mlp_macs_per_token(dim, hidden)
}

/// The attention half of a block: qkv, q·kᵀ, attn·v, proj.
pub fn vit_attention_macs(tokens: u64, dim: u64) -> u64 {
    tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim
}

/// The MLP of one token (fc1, fc2): what a token that DyT's dispatcher skips saves.
pub fn mlp_macs_per_token(dim: u64, hidden: u64) -> u64 {
    2 * dim * hidden
}

/// The patch embedding: each patch projected from `in_chans·P²` to `dim`.
pub fn vit_embed_macs(patches: u64, in_chans: u64, patch: u64, dim: u64) -> u64 {
    patches * in_chans * patch * patch * dim
}

/// What one stage of the multi-exit model costs per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StageCost {
    /// Trunk work from the previous exit to this one: blocks and adapters (and the patch
    /// embedding for the first stage). Paid by every sample that reaches this exit.
    pub trunk: u64,
    /// This exit's bypass and head. Paid by every sample that reaches this exit, whether it
    /// leaves here or not.
    pub exit: u64,
}

impl StageCost {
    pub fn total(&self) -> u64 {
        self.trunk + self.exit
    }
}
