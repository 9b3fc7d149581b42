// Empty library target so that chaos-user can declare a build-dependency on this crate
// (cargo rebuilds chaos-user when it changes); the programs are in the binary target.
#![no_std]
