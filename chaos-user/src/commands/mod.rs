//! One module per subcommand; `common` holds what attach and inject share.
pub mod attach;
mod common;
pub mod doctor;
pub mod inject;
