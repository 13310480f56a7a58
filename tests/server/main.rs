//! Integration tests: the real server on 127.0.0.1:0, real WebSocket (tungstenite) and raw
//! TCP clients. One binary (each links the whole crate), a module per area.

mod support;

mod acks;
mod browser;
mod cli;
mod connections;
mod delivery;
mod dlq;
mod hygiene;
mod isolation;
mod malformed;
mod metrics;
#[cfg(feature = "otlp")]
mod otlp;
mod policies;
mod publish;
mod resume;
mod runs;
mod shutdown;
mod sse;
mod trace;
