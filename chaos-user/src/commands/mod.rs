//! One module per subcommand.
pub mod attach;
