//! Integration tests: the real binary, real files, real sockets on 127.0.0.1.

mod api;
mod architecture;
mod cli;
mod clock;
mod daemon;
mod dashboards;
mod docs;
mod durability;
mod follow;
mod harness;
mod hostile;
mod journal;
mod mock_api;
mod ops;
mod parts;
mod profile;
mod proxy;
mod replicas;
mod sdk;
mod shards;
mod status;
mod tailer_model;
mod web;
