//! Chaos experiments (`chaos-user run`, `chaos-user plan`): a YAML file names the target, the
//! steady state (conditions over metrics, probes), the phases and the perturbations; each
//! perturbation runs as baseline -> perturbation -> recovery and gets a verdict; reports follow.
//!
//! `spec` reads and validates the file, `plan` unrolls it, `steady` and `probe` measure,
//! `verdict` judges, `runner` drives the session, `report` writes the results, `amplify` turns
//! observed failures into perturbations (Phoebe's rules).
pub mod amplify;
pub mod plan;
pub mod probe;
pub mod report;
pub mod results;
pub mod runner;
pub mod spec;
pub mod steady;
pub mod verdict;
