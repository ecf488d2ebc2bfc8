//! The resolved `RolloutPolicy`: one reading of it, shared with `validate`, lives in
//! [`endstate_core::policy`].

pub use endstate_core::policy::*;
