//! # dmpo-model
//!
//! The models of dmpo-burn, written once and generic over any Burn `Backend`: a timm-exact
//! [`vit::VisionTransformer`] and, built on it, the DMPO multi-exit model ([`dmpo::DmpoModel`]).
//! No I/O, no CLI and no backend is named here, so any Burn application can depend on this
//! crate alone.

mod config_error;
pub mod dmpo;
pub mod dyt;
pub mod kernels;
mod preprocess;
pub mod vit;

pub use config_error::ConfigError;
pub use preprocess::Preprocess;
