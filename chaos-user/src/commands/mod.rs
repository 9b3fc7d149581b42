//! One module per subcommand; `common` holds what attach and inject share.
pub mod attach;
mod common;
pub mod doctor;
pub mod inject;
pub mod plan;
pub mod run;
pub mod trace;
