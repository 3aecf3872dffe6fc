//! The controller's clerk: the generic [`crate::kv::ServiceClerk`] over the controller's
//! operations. It opens a session, finds the leader (following "wrong leader" hints, trying the
//! next server after silence), retries a join, leave or move with the same sequence number until
//! it is answered (so it applies once), and backs off boundedly when no server can take it.
//! Queries carry the session too but are reads: they never enter the log.

use super::command::{CtlError, CtlReply};
use super::store::CtlStore;
use crate::kv::{ServiceClerk, ServiceOutcome};

/// A controller client session's driver.
pub type CtlClerk = ServiceClerk<CtlStore>;
/// How a controller operation ended, as far as the client can know.
pub type CtlOutcome = ServiceOutcome<CtlReply, CtlError>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kv::{ClerkConfig, Consistency};
    use crate::shardctl::{CtlOp, CtlResponse, Replica};

    /// Registers, then sends a join; a "wrong leader" answer sends the same sequence to the
    /// hinted leader, and the answer ends the operation.
    #[test]
    fn join_follows_the_leader_with_the_same_sequence() {
        let mut clerk = CtlClerk::new(vec![1, 2, 3], ClerkConfig::default(), 7);
        let join = CtlOp::Join {
            groups: BTreeMap::from([(1, vec![Replica::on(4)])]),
        };
        clerk.start(join.clone(), Consistency::Linearizable);
        let reg = clerk.take_outgoing().remove(0);
        assert_eq!(reg.request.op, CtlOp::Register);
        let registered = CtlResponse {
            client: 0,
            seq: 0,
            result: Ok(CtlReply::Registered { client: 11 }),
            consistency: Consistency::Linearizable,
        };
        assert_eq!(clerk.on_response(reg.to, registered), None);
        let first = clerk.take_outgoing().remove(0);
        assert_eq!((first.request.client, first.request.seq), (11, 1));
        assert_eq!(first.request.op, join);
        let hint = if first.to == 2 { 3 } else { 2 };
        let redirect = CtlResponse {
            client: 11,
            seq: 1,
            result: Err(CtlError::WrongLeader { leader: hint }),
            consistency: Consistency::Linearizable,
        };
        assert_eq!(clerk.on_response(first.to, redirect), None);
        let second = clerk.take_outgoing().remove(0);
        assert_eq!((second.to, second.request.seq), (hint, 1));
        let done = CtlResponse {
            client: 11,
            seq: 1,
            result: Ok(CtlReply::Changed { num: 1 }),
            consistency: Consistency::Linearizable,
        };
        assert_eq!(
            clerk.on_response(hint, done),
            Some(CtlOutcome::Completed(Ok(CtlReply::Changed { num: 1 })))
        );
        assert!(clerk.is_idle());
    }
}
