//! One module per subcommand; `common` holds what they share (the target flags among it).
pub mod attach;
pub mod common;
pub mod doctor;
pub mod inject;
pub mod plan;
pub mod run;
pub mod trace;
