//! Consumer groups (classic protocol): the pure state machine ([`state`]) and the coordinator
//! that runs it for the groups this broker coordinates ([`coordinator`]).

pub mod coordinator;
pub mod state;
