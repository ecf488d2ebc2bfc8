//! The runtime's HTTP endpoints over real HTTP: one test binary, a module per area.

mod endpoints;
mod support;
mod webhook;
