//! Integration tests: the real binary, real files, real sockets on 127.0.0.1.

mod cli;
mod daemon;
mod durability;
mod harness;
mod hostile;
mod tailer_model;
