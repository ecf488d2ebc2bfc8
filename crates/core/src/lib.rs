//! endstate's pure core.
//!
//! No I/O beyond the [`tree::Tree`] it is handed, no clock, no network: rendering and
//! validation here are deterministic functions of a repository's content.

pub mod backoff;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod invalid;
pub mod object;
pub mod ownership;
pub mod placement;
pub mod policy;
pub mod render;
pub mod syntax;
pub mod tree;
pub mod validate;
pub mod yaml;

pub use error::{Diagnostic, Diagnostics};
pub use invalid::Invalid;
pub use object::{FleetObject, Kind, ObjectRef};
pub use render::{CacheStats, RenderCache, render_cached};
pub use render::{Options, Owner, Rendered, RenderedObject, render};
pub use tree::ContentId;
pub use tree::{DirTree, MemTree, Tree};
