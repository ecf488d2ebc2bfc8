//! The trailers endstate writes in a revert commit's message, read back by the quarantine
//! check and by attribution.

/// The trailer naming the commit a revert undoes.
pub const REVERT_OF: &str = "Endstate-Revert-Of";
/// The trailer naming the fleet whose breaker asked for the revert.
pub const FLEET: &str = "Endstate-Fleet";
