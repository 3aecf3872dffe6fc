//! Counters of a run: messages and bytes sent per group (counted at send, so messages the
//! network later drops count too, as RPCs do in the lab), broken down by message kind, plus the
//! few per-node counts that scenario tests assert on.

use std::collections::BTreeMap;

use crate::raft::{AppendResponse, GroupId, Message, MessageBody, NodeId};

/// Count and bytes of one kind of message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Messages sent.
    pub messages: u64,
    /// Their approximate bytes ([`Message::approx_bytes`]).
    pub bytes: u64,
}

/// The counters of one group.
#[derive(Clone, Debug, Default)]
pub struct GroupStats {
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// By [`MessageBody::name`].
    pub by_kind: BTreeMap<&'static str, KindStats>,
    /// Rejected Appends (AppendResponse::Rejected) sent, by the rejecting node.
    pub append_rejections: BTreeMap<NodeId, u64>,
    /// Snapshots installed from a leader, by node.
    pub snapshots_installed: BTreeMap<NodeId, u64>,
    /// Snapshots taken by the application, by node.
    pub snapshots_taken: BTreeMap<NodeId, u64>,
}

/// The counters of a cluster.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    groups: BTreeMap<GroupId, GroupStats>,
    /// Messages that arrived and were stepped.
    pub delivered: u64,
    /// Messages that arrived and were stepped, by receiving node.
    pub delivered_to: BTreeMap<NodeId, u64>,
    /// Messages dropped at send or on arrival, for any reason.
    pub dropped: u64,
    /// Events processed.
    pub events: u64,
    /// Disk writes completed (including those completed by a crash).
    pub disk_writes: u64,
    /// KV requests clients sent (retries included).
    pub kv_requests: u64,
    /// Controller requests sent by controller clients (including resends).
    pub ctl_requests: u64,
}

impl Stats {
    /// Counts one message at send time.
    pub fn on_send(&mut self, message: &Message) {
        let bytes = message.approx_bytes() as u64;
        let g = self.groups.entry(message.group).or_default();
        g.messages += 1;
        g.bytes += bytes;
        let kind = g.by_kind.entry(message.body.name()).or_default();
        kind.messages += 1;
        kind.bytes += bytes;
        if let MessageBody::AppendResponse(AppendResponse::Rejected { .. }) = message.body {
            *g.append_rejections.entry(message.from).or_default() += 1;
        }
    }

    /// Counts a snapshot installed by `node`.
    pub fn on_snapshot_installed(&mut self, group: GroupId, node: NodeId) {
        *self
            .groups
            .entry(group)
            .or_default()
            .snapshots_installed
            .entry(node)
            .or_default() += 1;
    }

    /// Counts a snapshot taken by `node`.
    pub fn on_snapshot_taken(&mut self, group: GroupId, node: NodeId) {
        *self
            .groups
            .entry(group)
            .or_default()
            .snapshots_taken
            .entry(node)
            .or_default() += 1;
    }

    /// The counters of `group` (all zero when it sent nothing).
    pub fn group(&self, group: GroupId) -> GroupStats {
        self.groups.get(&group).cloned().unwrap_or_default()
    }

    /// Messages sent in `group`.
    pub fn messages(&self, group: GroupId) -> u64 {
        self.groups.get(&group).map_or(0, |g| g.messages)
    }

    /// Bytes sent in `group`.
    pub fn bytes(&self, group: GroupId) -> u64 {
        self.groups.get(&group).map_or(0, |g| g.bytes)
    }

    /// Messages of one kind ([`MessageBody::name`]) sent in `group`.
    pub fn kind(&self, group: GroupId, kind: &str) -> KindStats {
        self.groups
            .get(&group)
            .and_then(|g| g.by_kind.get(kind).copied())
            .unwrap_or_default()
    }

    /// Rejected Appends sent by `node` in `group`.
    pub fn append_rejections(&self, group: GroupId, node: NodeId) -> u64 {
        self.groups
            .get(&group)
            .and_then(|g| g.append_rejections.get(&node).copied())
            .unwrap_or(0)
    }

    /// Snapshots `node` installed from a leader in `group`.
    pub fn snapshots_installed(&self, group: GroupId, node: NodeId) -> u64 {
        self.groups
            .get(&group)
            .and_then(|g| g.snapshots_installed.get(&node).copied())
            .unwrap_or(0)
    }

    /// Messages sent in all groups.
    pub fn total_messages(&self) -> u64 {
        self.groups.values().map(|g| g.messages).sum()
    }

    /// Bytes sent in all groups.
    pub fn total_bytes(&self) -> u64 {
        self.groups.values().map(|g| g.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends are counted per group, per kind, and rejections per rejecting node.
    #[test]
    fn counts_per_group_and_kind() {
        let mut s = Stats::default();
        let reject = AppendResponse::Rejected {
            rejected_index: 5,
            hint_index: 3,
            hint_term: 1,
        };
        let m = |group, body| Message {
            group,
            from: 2,
            to: 1,
            term: 1,
            body,
        };
        s.on_send(&m(1, MessageBody::AppendResponse(reject)));
        s.on_send(&m(1, MessageBody::TimeoutNow));
        s.on_send(&m(2, MessageBody::TimeoutNow));
        assert_eq!(s.messages(1), 2);
        assert_eq!(s.kind(1, "TimeoutNow").messages, 1);
        assert_eq!(s.kind(1, "TimeoutNow").bytes, 56);
        assert_eq!(s.append_rejections(1, 2), 1);
        assert_eq!(s.append_rejections(2, 2), 0);
        assert_eq!(s.total_messages(), 3);
        assert_eq!(s.bytes(1), s.total_bytes() - 56);
    }
}
