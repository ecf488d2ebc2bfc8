//! The labels, annotations and field manager endstate puts on the objects it writes: how an
//! object says it belongs to a fleet, how a user keeps it from being pruned, and the name
//! endstate's server-side applies own their fields under.

/// The label endstate puts on every object it applies; prune only ever considers objects
/// that carry it with the fleet's name.
pub const OWNER_LABEL: &str = "fleet.endstate.dev/fleet";
/// The namespace of the owning Fleet, on objects that live outside it (in a business
/// cluster); an object without it belongs to the Fleet of that name in its own namespace.
pub const OWNER_NAMESPACE_LABEL: &str = "fleet.endstate.dev/fleet-namespace";
/// The business cluster an object is placed in, on the objects a Fleet writes to business
/// clusters (its Machines and their package versions): part of their identity, since each
/// business cluster holds its own copy of a package version.
pub const CLUSTER_LABEL: &str = "fleet.endstate.dev/business-cluster";
/// Hands an object over to another Fleet (`namespace/name`): that Fleet may then write it,
/// and its labels name the new owner from that write on.
pub const TRANSFER_ANNOTATION: &str = "fleet.endstate.dev/transfer-to";
/// The annotation that keeps an object alive when it is removed from Git.
pub const PRUNE_ANNOTATION: &str = "fleet.endstate.dev/prune";
/// The value of [`PRUNE_ANNOTATION`] that disables prune.
pub const PRUNE_DISABLED: &str = "disabled";
/// The field manager of endstate's own objects (its CRDs), and of every write before each
/// Fleet had its own (see `endstate_core::ownership::FleetId::field_manager`).
pub const FIELD_MANAGER: &str = "endstate";
