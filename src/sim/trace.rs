//! A readable record of what happened in a run: role changes, commits, snapshots, crashes,
//! restarts and network changes, each stamped with virtual time, e.g.
//! `[   1.230s] g1 n2 leader term 3`. Failures print the tail; the CLI prints all of it.

use std::collections::VecDeque;
use std::fmt;

use crate::raft::{AppendResponse, GroupId, Index, MessageBody, NodeId, Role, Term};

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceKind {
    /// A member's role, term or known leader changed.
    Role {
        /// The group.
        group: GroupId,
        /// The member.
        node: NodeId,
        /// Its new role.
        role: Role,
        /// Its term.
        term: Term,
        /// The leader it knows of (0: none).
        leader: NodeId,
    },
    /// The highest index applied anywhere in the group moved up to `index`, first at `node`.
    Commit {
        /// The group.
        group: GroupId,
        /// The new highest applied index.
        index: Index,
        /// The member that applied it first.
        node: NodeId,
    },
    /// The application of a member took a snapshot.
    SnapshotTaken {
        /// The group.
        group: GroupId,
        /// The member.
        node: NodeId,
        /// The snapshot's last index.
        index: Index,
    },
    /// A member installed a snapshot sent by its leader.
    SnapshotInstalled {
        /// The group.
        group: GroupId,
        /// The member.
        node: NodeId,
        /// The snapshot's last index.
        index: Index,
    },
    /// A node crashed; of its pending disk writes, `writes_kept` reached the disk.
    Crash {
        /// The node.
        node: NodeId,
        /// Pending writes that completed anyway.
        writes_kept: usize,
        /// Pending writes lost.
        writes_lost: usize,
    },
    /// A node restarted from its durable state.
    Restart {
        /// The node.
        node: NodeId,
    },
    /// A node was cut off from every other node.
    Disconnect {
        /// The node.
        node: NodeId,
    },
    /// A node was reconnected.
    Connect {
        /// The node.
        node: NodeId,
    },
    /// One group's traffic to and from a node was cut (`cut`) or restored.
    GroupCut {
        /// The group.
        group: GroupId,
        /// The node.
        node: NodeId,
        /// Cut or restored.
        cut: bool,
    },
    /// The network was split into these sides.
    Partition {
        /// The sides.
        sides: Vec<Vec<NodeId>>,
    },
    /// The network was made whole.
    Heal,
    /// The unreliable switch changed.
    Unreliable {
        /// The new setting.
        on: bool,
    },
    /// The long-reordering switch changed.
    LongReordering {
        /// The new setting.
        on: bool,
    },
    /// A message was sent (recorded only with `SimConfig::trace_messages`).
    Send {
        /// The group.
        group: GroupId,
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// The sender's term.
        term: Term,
        /// The message's kind and key fields.
        summary: String,
    },
}

/// A one-line summary of a message body: its kind and the fields that explain it.
pub fn summarize(body: &MessageBody) -> String {
    match body {
        MessageBody::Vote {
            last_index,
            last_term,
            reason,
            ..
        } => {
            format!("{} last {last_index}/{last_term} {reason:?}", body.name())
        }
        MessageBody::VoteResponse { granted, .. } => format!("{} granted={granted}", body.name()),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "Append prev {prev_index}/{prev_term} entries {} commit {commit}",
            match (entries.first(), entries.last()) {
                (Some(a), Some(b)) =>
                    format!("{}..={} (t{}..t{})", a.index, b.index, a.term, b.term),
                _ => "none".to_string(),
            }
        ),
        MessageBody::AppendResponse(AppendResponse::Accepted { match_index }) => {
            format!("AppendResponse accepted match {match_index}")
        }
        MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index,
            hint_index,
            hint_term,
        }) => {
            format!("AppendResponse rejected {rejected_index} hint {hint_index}/{hint_term}")
        }
        MessageBody::Heartbeat { commit, read_round } => {
            format!("Heartbeat commit {commit} read_round {read_round}")
        }
        MessageBody::SnapshotChunk {
            meta,
            total_bytes,
            offset,
            data,
        } => format!(
            "SnapshotChunk {}/{} offset {offset} len {} of {total_bytes}",
            meta.index,
            meta.term,
            data.len()
        ),
        MessageBody::SnapshotResponse {
            index,
            next_offset,
            done,
        } => {
            format!("SnapshotResponse {index} next {next_offset} done={done}")
        }
        MessageBody::ReadIndexResponse { index, .. } => format!("ReadIndexResponse {index}"),
        _ => body.name().to_string(),
    }
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Virtual time.
    pub at_us: u64,
    /// What happened.
    pub kind: TraceKind,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:>8.3}s] ", self.at_us as f64 / 1e6)?;
        match &self.kind {
            TraceKind::Role {
                group,
                node,
                role: Role::Follower,
                term,
                leader,
            } if *leader != 0 => {
                write!(
                    f,
                    "g{group} n{node} follower term {term} (leader n{leader})"
                )
            }
            TraceKind::Role {
                group,
                node,
                role,
                term,
                ..
            } => {
                write!(f, "g{group} n{node} {} term {term}", role_name(*role))
            }
            TraceKind::Commit { group, index, node } => {
                write!(f, "g{group} commit {index} (n{node})")
            }
            TraceKind::SnapshotTaken { group, node, index } => {
                write!(f, "g{group} n{node} snapshot at {index}")
            }
            TraceKind::SnapshotInstalled { group, node, index } => {
                write!(f, "g{group} n{node} installed snapshot at {index}")
            }
            TraceKind::Crash {
                node,
                writes_kept,
                writes_lost,
            } => write!(
                f,
                "n{node} crash ({writes_kept} pending writes reached disk, {writes_lost} lost)"
            ),
            TraceKind::Restart { node } => write!(f, "n{node} restart"),
            TraceKind::Disconnect { node } => write!(f, "n{node} disconnected"),
            TraceKind::Connect { node } => write!(f, "n{node} connected"),
            TraceKind::GroupCut {
                group,
                node,
                cut: true,
            } => write!(f, "g{group} n{node} cut off"),
            TraceKind::GroupCut {
                group,
                node,
                cut: false,
            } => write!(f, "g{group} n{node} rejoined"),
            TraceKind::Partition { sides } => {
                write!(f, "partition")?;
                for side in sides {
                    let names: Vec<String> = side.iter().map(|n| format!("n{n}")).collect();
                    write!(f, " [{}]", names.join(" "))?;
                }
                Ok(())
            }
            TraceKind::Heal => write!(f, "network healed"),
            TraceKind::Unreliable { on } => write!(f, "network unreliable {}", on_off(*on)),
            TraceKind::LongReordering { on } => write!(f, "long reordering {}", on_off(*on)),
            TraceKind::Send {
                group,
                from,
                to,
                term,
                summary,
            } => {
                write!(f, "g{group} n{from}->n{to} t{term} {summary}")
            }
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// The kept events: all of them, or the last `capacity`.
#[derive(Debug)]
pub struct Trace {
    events: VecDeque<TraceEvent>,
    capacity: Option<usize>,
}

impl Trace {
    /// Keeps the last `capacity` events, or all when `None`.
    pub fn new(capacity: Option<usize>) -> Trace {
        Trace {
            events: VecDeque::new(),
            capacity,
        }
    }

    /// Records one event.
    pub fn record(&mut self, at_us: u64, kind: TraceKind) {
        if let Some(cap) = self.capacity {
            if cap == 0 {
                return;
            }
            if self.events.len() == cap {
                self.events.pop_front();
            }
        }
        self.events.push_back(TraceEvent { at_us, kind });
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &TraceEvent> {
        self.events.iter()
    }

    /// Removes and returns the kept events.
    pub fn take(&mut self) -> Vec<TraceEvent> {
        self.events.drain(..).collect()
    }

    /// The last `n` events, one per line.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.events.len().saturating_sub(n);
        let lines: Vec<String> = self
            .events
            .iter()
            .skip(skip)
            .map(|e| format!("  {e}"))
            .collect();
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines read as documented, and a bounded trace keeps only the newest events.
    #[test]
    fn lines_and_tail() {
        let mut t = Trace::new(Some(2));
        let leader = TraceKind::Role {
            group: 1,
            node: 2,
            role: Role::Leader,
            term: 3,
            leader: 2,
        };
        t.record(1_230_000, leader);
        t.record(
            1_450_000,
            TraceKind::Commit {
                group: 1,
                index: 17,
                node: 2,
            },
        );
        t.record(
            2_000_000,
            TraceKind::Partition {
                sides: vec![vec![1, 2], vec![3]],
            },
        );
        let lines: Vec<String> = t.events().map(|e| e.to_string()).collect();
        assert_eq!(
            lines,
            [
                "[   1.450s] g1 commit 17 (n2)",
                "[   2.000s] partition [n1 n2] [n3]"
            ]
        );
        assert_eq!(t.tail(1), "  [   2.000s] partition [n1 n2] [n3]");
        let mut full = Trace::new(None);
        let leader = TraceKind::Role {
            group: 1,
            node: 2,
            role: Role::Leader,
            term: 3,
            leader: 2,
        };
        full.record(1_230_000, leader);
        assert_eq!(
            full.take()[0].to_string(),
            "[   1.230s] g1 n2 leader term 3"
        );
        assert_eq!(full.events().count(), 0);
    }
}
