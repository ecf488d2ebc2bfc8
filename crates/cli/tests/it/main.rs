//! Integration tests of the `endstate` binary: one test binary, a module per area.

mod broken;
mod business;
mod cli;
mod controller;
mod crds;
mod demo;
mod gates;
mod kill;
mod kustomize;
mod layout;
mod plan;
mod plan_against;
mod run;
mod support;
mod target;
mod verify;
