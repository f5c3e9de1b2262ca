//! The wire formats, as serde types shared by the server (the reaper) and its clients
//! (`hermesctl`, the tests): the control protocol, the health document, and a slot's
//! status record (`supervise/status.json` and the health API's details).
//!
//! Invariant: server and client serialize and parse the same types, so a field cannot be
//! renamed on one side only; nothing here walks a `serde_json::Value` by hand.

pub mod check;
pub mod control;
pub mod health;
pub mod status;
