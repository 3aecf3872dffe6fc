//! The client's logic, sans-I/O, shared by the simulator and the real client: open a session,
//! find the leader, follow redirects, retry a request with the same sequence number until it is
//! answered, and back off (boundedly) when no server can take it.
//!
//! One operation is in flight at a time per [`Clerk`]: the session's exactly-once guarantee is
//! for the latest sequence number, so a client that wants more in flight uses more sessions.
//! Time arrives as ticks; randomness (backoff jitter) from a seeded stream.

use super::command::*;
use super::service::{Refusal, ServiceRequest, ServiceResponse, StateMachine};
use super::store::KvStore;
use crate::raft::NodeId;
use crate::rng::Rng;

/// The KV service's clerk.
pub type Clerk = ServiceClerk<KvStore>;
/// A KV request to send now.
pub type Outgoing = ServiceOutgoing<Op>;
/// How a KV operation ended.
pub type Outcome = ServiceOutcome<Reply, KvError>;

/// Retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClerkConfig {
    /// A request unanswered for this many ticks is sent again, to the next server.
    pub request_timeout_ticks: u64,
    /// After every server said no in a row, wait at most this long before the next round; the
    /// wait doubles from one tick up to this bound, with jitter.
    pub max_backoff_ticks: u64,
}

impl Default for ClerkConfig {
    /// With 10 ms ticks: resend after 500 ms of silence (a few network round trips plus a
    /// disk write, far under an election), back off at most 200 ms.
    fn default() -> ClerkConfig {
        ClerkConfig {
            request_timeout_ticks: 50,
            max_backoff_ticks: 20,
        }
    }
}

/// A request to send now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceOutgoing<O> {
    /// The server.
    pub to: NodeId,
    /// The request.
    pub request: ServiceRequest<O>,
}

/// How an operation ended, as far as the client can know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceOutcome<R, E> {
    /// It completed with this result (which may be a refusal such as `ValueTooLarge`).
    Completed(Result<R, E>),
    /// The session expired while the operation was being retried: it may or may not have taken
    /// effect. The clerk opens a new session for the next operation.
    Unknown,
}

#[derive(Clone, Debug)]
struct InFlight<O> {
    op: O,
    consistency: Consistency,
    /// The operation's sequence number (assigned once the session is open).
    seq: u64,
    /// Waiting for a registration first.
    registering: bool,
    sent_to: Option<NodeId>,
    ticks_waiting: u64,
    /// Servers that refused in a row.
    refusals: usize,
    backoff_left: u64,
    backoff_next: u64,
}

/// One client session's driver, for any service `M`.
pub struct ServiceClerk<M: StateMachine> {
    servers: Vec<NodeId>,
    config: ClerkConfig,
    rng: Rng,
    /// Index into `servers` of the one we believe leads.
    leader: usize,
    session: Option<ClientId>,
    seq: u64,
    current: Option<InFlight<M::Op>>,
    outgoing: Vec<ServiceOutgoing<M::Op>>,
}

impl<M: StateMachine> ServiceClerk<M> {
    /// A clerk for a group served by `servers` (at least one).
    pub fn new(servers: Vec<NodeId>, config: ClerkConfig, seed: u64) -> ServiceClerk<M> {
        assert!(!servers.is_empty(), "a clerk needs at least one server");
        let mut rng = Rng::stream(seed, "clerk");
        let leader = rng.index(servers.len());
        ServiceClerk {
            servers,
            config,
            rng,
            leader,
            session: None,
            seq: 0,
            current: None,
            outgoing: Vec::new(),
        }
    }

    /// True when no operation is in flight.
    pub fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// The open session, if any.
    pub fn session(&self) -> Option<ClientId> {
        self.session
    }

    /// The server this clerk believes leads.
    pub fn leader_guess(&self) -> NodeId {
        self.servers[self.leader]
    }

    /// Starts an operation; the requests to send are in [`ServiceClerk::take_outgoing`].
    pub fn start(&mut self, op: M::Op, consistency: Consistency) {
        assert!(self.current.is_none(), "one operation at a time per clerk");
        let registering = self.session.is_none();
        let seq = if registering { 0 } else { self.next_seq() };
        self.current = Some(InFlight {
            op,
            consistency,
            seq,
            registering,
            sent_to: None,
            ticks_waiting: 0,
            refusals: 0,
            backoff_left: 0,
            backoff_next: 1,
        });
        self.send_current();
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Requests to send now.
    pub fn take_outgoing(&mut self) -> Vec<ServiceOutgoing<M::Op>> {
        std::mem::take(&mut self.outgoing)
    }

    fn send_current(&mut self) {
        let to = self.servers[self.leader];
        let session = self.session;
        let Some(current) = self.current.as_mut() else {
            return;
        };
        let request = if current.registering {
            ServiceRequest {
                client: 0,
                seq: 0,
                op: M::register_op(),
                consistency: Consistency::Linearizable,
            }
        } else {
            ServiceRequest {
                client: session.expect("open session"),
                seq: current.seq,
                op: current.op.clone(),
                consistency: current.consistency,
            }
        };
        current.sent_to = Some(to);
        current.ticks_waiting = 0;
        self.outgoing.push(ServiceOutgoing { to, request });
    }

    /// Handles a server's response; returns the operation's outcome when it is over.
    pub fn on_response(
        &mut self,
        from: NodeId,
        response: ServiceResponse<M::Reply, M::Error>,
    ) -> Option<ServiceOutcome<M::Reply, M::Error>> {
        let current = self.current.as_ref()?;
        let expected = if current.registering {
            (0, 0)
        } else {
            (self.session?, current.seq)
        };
        if (response.client, response.seq) != expected {
            return None; // a late answer to an earlier request
        }
        let registering = current.registering;
        let refusal = response.result.as_ref().err().and_then(M::as_refusal);
        match (&response.result, refusal) {
            (Ok(reply), _) if registering => {
                let client = M::registered(reply)?;
                self.session = Some(client);
                self.seq = 0;
                let seq = self.next_seq();
                let current = self.current.as_mut().expect("checked");
                current.registering = false;
                current.seq = seq;
                current.refusals = 0;
                self.send_current();
                None
            }
            (_, Some(Refusal::WrongLeader { leader })) => {
                self.redirect(from, leader);
                None
            }
            (_, Some(Refusal::Timeout | Refusal::Busy)) => {
                self.redirect(from, 0);
                None
            }
            (_, Some(Refusal::SessionExpired)) => {
                self.session = None;
                self.current = None;
                Some(ServiceOutcome::Unknown)
            }
            _ => {
                self.current = None;
                Some(ServiceOutcome::Completed(response.result))
            }
        }
    }

    /// The server `from` could not take the request: go to the hinted leader, or the next
    /// server; after a whole round of refusals, back off before trying again.
    fn redirect(&mut self, from: NodeId, hint: NodeId) {
        let n = self.servers.len();
        if let Some(i) = self.servers.iter().position(|&s| s == hint && s != from) {
            self.leader = i;
        } else if self.servers[self.leader] == from {
            self.leader = (self.leader + 1) % n;
        }
        let max_backoff = self.config.max_backoff_ticks;
        let current = self.current.as_mut().expect("in flight");
        current.refusals += 1;
        current.sent_to = None;
        if current.refusals >= n {
            current.refusals = 0;
            let jitter = self.rng.range(0, current.backoff_next + 1);
            current.backoff_left = (current.backoff_next / 2 + jitter).max(1);
            current.backoff_next = (current.backoff_next * 2).min(max_backoff.max(1));
        } else {
            self.send_current();
        }
    }

    /// Advances the clerk's time by one tick: ends a backoff, or resends a request that went
    /// unanswered for too long (to the next server: the one we asked may be gone).
    pub fn tick(&mut self) {
        let timeout = self.config.request_timeout_ticks;
        let n = self.servers.len();
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if current.sent_to.is_none() {
            if current.backoff_left > 0 {
                current.backoff_left -= 1;
            }
            if current.backoff_left == 0 {
                self.send_current();
            }
            return;
        }
        current.ticks_waiting += 1;
        if current.ticks_waiting >= timeout {
            self.leader = (self.leader + 1) % n;
            self.send_current();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn get() -> Op {
        Op::Get {
            key: Bytes::from_static(b"k"),
        }
    }

    fn respond(request: &Request, result: Result<Reply, KvError>) -> Response {
        Response {
            client: request.client,
            seq: request.seq,
            result,
            consistency: Consistency::Linearizable,
        }
    }

    /// A new clerk registers first, then sends the operation with sequence 1 to the same server.
    #[test]
    fn registers_then_sends() {
        let mut clerk = Clerk::new(vec![1, 2, 3], ClerkConfig::default(), 1);
        clerk.start(get(), Consistency::Linearizable);
        let out = clerk.take_outgoing();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request.op, Op::Register);
        let reg = respond(&out[0].request, Ok(Reply::Registered { client: 77 }));
        assert_eq!(clerk.on_response(out[0].to, reg), None);
        let out2 = clerk.take_outgoing();
        assert_eq!((out2[0].request.client, out2[0].request.seq), (77, 1));
        let done = clerk.on_response(
            out2[0].to,
            respond(&out2[0].request, Ok(Reply::Value(None))),
        );
        assert_eq!(done, Some(Outcome::Completed(Ok(Reply::Value(None)))));
        assert!(clerk.is_idle());
    }

    /// A redirect with a hint goes to the hinted leader at once, with the same sequence number;
    /// a late answer to an old sequence is ignored.
    #[test]
    fn follows_leader_hint_and_keeps_sequence() {
        let mut clerk = Clerk::new(vec![1, 2, 3], ClerkConfig::default(), 2);
        clerk.session = Some(5);
        clerk.start(get(), Consistency::Linearizable);
        let first = clerk.take_outgoing().remove(0);
        let hint = if first.to == 3 { 1 } else { 3 };
        let redirect = respond(&first.request, Err(KvError::WrongLeader { leader: hint }));
        assert_eq!(clerk.on_response(first.to, redirect), None);
        let second = clerk.take_outgoing().remove(0);
        assert_eq!(second.to, hint);
        assert_eq!(second.request.seq, first.request.seq);
        let stale = Response {
            seq: 0,
            ..respond(&second.request, Ok(Reply::Done))
        };
        assert_eq!(clerk.on_response(second.to, stale), None);
        assert!(!clerk.is_idle());
    }

    /// Silence past the timeout resends to the next server; a whole round of refusals backs off
    /// for a bounded number of ticks before trying again.
    #[test]
    fn times_out_and_backs_off() {
        let config = ClerkConfig {
            request_timeout_ticks: 5,
            max_backoff_ticks: 8,
        };
        let mut clerk = Clerk::new(vec![1, 2, 3], config, 3);
        clerk.session = Some(5);
        clerk.start(get(), Consistency::Linearizable);
        let first = clerk.take_outgoing().remove(0);
        for _ in 0..5 {
            clerk.tick();
        }
        let resent = clerk.take_outgoing();
        assert_eq!(resent.len(), 1);
        assert_ne!(resent[0].to, first.to);
        let mut last = resent[0].clone();
        for _ in 0..3 {
            let no = respond(&last.request, Err(KvError::WrongLeader { leader: 0 }));
            assert_eq!(clerk.on_response(last.to, no), None);
            if let Some(next) = clerk.take_outgoing().pop() {
                last = next;
            }
        }
        let mut waited = 0;
        while clerk.take_outgoing().is_empty() {
            clerk.tick();
            waited += 1;
            assert!(waited <= 8, "backoff is bounded");
        }
    }

    /// An expired session ends the operation as unknown and the next one registers again.
    #[test]
    fn expired_session_is_unknown_outcome() {
        let mut clerk = Clerk::new(vec![1], ClerkConfig::default(), 4);
        clerk.session = Some(5);
        clerk.start(
            Op::Delete {
                key: Bytes::from_static(b"k"),
            },
            Consistency::Linearizable,
        );
        let out = clerk.take_outgoing().remove(0);
        let expired = respond(&out.request, Err(KvError::SessionExpired));
        assert_eq!(clerk.on_response(out.to, expired), Some(Outcome::Unknown));
        clerk.start(get(), Consistency::Linearizable);
        assert_eq!(clerk.take_outgoing()[0].request.op, Op::Register);
    }
}
