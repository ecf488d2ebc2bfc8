//! Integration tests of the Git adapter, against real repositories and real transports.

mod attribution;
mod revert;
mod secrets;
mod signature;
mod source;
mod ssh;
mod support;
mod triggers;
