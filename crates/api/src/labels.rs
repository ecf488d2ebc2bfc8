//! The labels, annotations and field manager endstate puts on the objects it writes: how an
//! object says it belongs to a fleet, how a user keeps it from being pruned, and the name
//! endstate's server-side applies own their fields under.

/// The label endstate puts on every object it applies; prune only ever considers objects
/// that carry it with the fleet's name.
pub const OWNER_LABEL: &str = "fleet.endstate.dev/fleet";
/// The annotation that keeps an object alive when it is removed from Git.
pub const PRUNE_ANNOTATION: &str = "fleet.endstate.dev/prune";
/// The value of [`PRUNE_ANNOTATION`] that disables prune.
pub const PRUNE_DISABLED: &str = "disabled";
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "endstate";
