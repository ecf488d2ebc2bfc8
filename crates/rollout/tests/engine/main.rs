//! The rollout engine against a modeled fleet: properties, the bound on its persisted state,
//! and one example per transition.

mod bound;
mod properties;
mod transitions;
mod world;
