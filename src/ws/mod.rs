//! WebSocket without sockets: the opening [`handshake`], the [`frame`] codec, the control
//! [`message`]s, and the per-connection [`session`] state machine.

pub mod frame;
pub mod handshake;
pub mod message;
pub mod session;
