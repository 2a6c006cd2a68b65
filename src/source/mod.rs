//! Sources: where lines come from. Each reads its input in blocks and hands them to
//! the [`crate::pipeline::Pipeline`] with its own [`crate::lines::LineSplitter`].

pub mod api;
pub mod file;
pub mod identity;
pub mod task_list;
pub mod watch;
