//! What a control unit is doing: its role, carrying what only that role has, and the one place
//! where a role changes.
//!
//! The transitions (each made by the function named, in the module named):
//!
//! | from | to | when | where |
//! |---|---|---|---|
//! | standby | candidate | the primary is lost and a majority chose us, or an operator asked | `start_failover`, failover.rs |
//! | candidate | primary | every channel resolved (answered, or the query deadline passed) | `maybe_finish_failover`, failover.rs |
//! | any | joining | a frame of a higher epoch from another control unit | `adopt_higher_epoch`, mod.rs |
//! | standby | joining | the primary starts a transfer that replaces our state | `on_primary_msg`, standby.rs |
//! | joining | standby | the transfer (or catch-up) completed every channel | `on_primary_msg`, standby.rs |
//! | joining | standby | the new epoch fell silent before anyone joined it: keep the old state | `resume_kept_state`, standby.rs |
//!
//! Each goes through [`ControlUnit::enter`], which also tells the host (`Event::RoleChanged`).

use super::ControlUnit;
use crate::proto::{Event, Role, SectionMask};

/// The role, with the data only that role has. Only a candidate has any yet: its takeover.
#[derive(Debug)]
pub(super) enum RoleState {
    Primary,
    Standby,
    Candidate(Takeover),
    Joining,
}

impl RoleState {
    pub(super) fn role(&self) -> Role {
        match self {
            RoleState::Primary => Role::Primary,
            RoleState::Standby => Role::Standby,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Joining => Role::Joining,
        }
    }
}

/// A candidate's takeover [0068-0077]: the LAST-APPLIED queries out, and what each channel has
/// resolved to so far. It exists only while the node is a candidate, so no field of it can be
/// left over into another role.
#[derive(Debug)]
pub(super) struct Takeover {
    /// Channels not resolved by then are resolved without an answer.
    pub deadline_us: u64,
    /// When the unanswered queries were last sent (they are resent every RTO).
    pub last_query_us: u64,
    /// Per channel, by channel index.
    pub chans: Vec<TakeoverChan>,
}

/// One channel of a takeover.
#[derive(Debug, Clone, Copy)]
pub(super) struct TakeoverChan {
    /// Not resolved yet: no answer from the client, and the deadline not passed.
    pub pending: bool,
    /// A LAST-APPLIED query is to be sent with the client's next frame.
    pub query_due: bool,
    /// Resolved, with these sections to replay to the client once the takeover ends.
    pub replay: Option<SectionMask>,
}

impl Takeover {
    pub(super) fn new(now_us: u64, query_timeout_us: u64, channels: usize) -> Self {
        Takeover {
            deadline_us: now_us + query_timeout_us,
            last_query_us: now_us,
            chans: vec![
                TakeoverChan {
                    pending: true,
                    query_due: true,
                    replay: None,
                };
                channels
            ],
        }
    }

    pub(super) fn all_resolved(&self) -> bool {
        self.chans.iter().all(|c| !c.pending)
    }
}

impl ControlUnit {
    /// The one place a role changes (see the table in this module's documentation).
    pub(super) fn enter(&mut self, to: RoleState) {
        let (was, role) = (self.state.role(), to.role());
        self.state = to;
        if was != role {
            self.events.push(Event::RoleChanged {
                role,
                epoch: self.epoch,
            });
        }
    }

    /// The takeover under way (`None` unless a candidate).
    pub(super) fn takeover(&self) -> Option<&Takeover> {
        match &self.state {
            RoleState::Candidate(t) => Some(t),
            _ => None,
        }
    }

    pub(super) fn takeover_mut(&mut self) -> Option<&mut Takeover> {
        match &mut self.state {
            RoleState::Candidate(t) => Some(t),
            _ => None,
        }
    }
}
