//! Consumer groups (classic protocol): the pure state machine ([`state`]) and the coordinator
//! that runs it for the groups this broker coordinates ([`coordinator`]), and the expiry of
//! idle groups' committed offsets ([`retention`]).

pub mod coordinator;
pub mod retention;
pub mod state;
