//! Library half of the `outbox` command: the standalone relay, the handler
//! on an event file, quarantine redrive and outbox replay, registry schemas,
//! the demo and the local resources it creates.
//! The end-to-end tests use the same code, so the demo and the tests share
//! one definition of the local resources.

pub mod bootstrap;
pub mod cosmos;
pub mod demo;
pub mod invoke;
pub mod progress;
pub mod redrive;
pub mod relay;
pub mod replay;
pub mod schema;
